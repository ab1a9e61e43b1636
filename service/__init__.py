"""ASGILook: an image-sharing HTTP service on Falcon, S3 and Redis."""
