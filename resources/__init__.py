"""Dagster resources: S3 access, the upload bucket, the memo store, Parquet IO, embedders."""
