"""A run's logs: the PostgreSQL index (model, counts, store) and the S3 archive."""
