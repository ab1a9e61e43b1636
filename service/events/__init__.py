"""Live events (image.created, image.deleted): a log every worker and replica shares (a Redis
Stream, or a table of the embedded store), and each worker's hub fanning it out to its
subscribers."""
