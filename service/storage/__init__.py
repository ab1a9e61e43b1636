"""Where images are kept: an S3-compatible bucket (s3.py) or the embedded store on local disk
(local.py), both behind images.Storage; and the janitor that removes what writes cut off midway
left behind."""
