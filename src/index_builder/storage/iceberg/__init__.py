"""The lake backend: every persistent table as an Apache Iceberg table (pyiceberg, a
SQL catalog), on a local folder or object storage (``s3://``, ``gs://``).

See :class:`index_builder.storage.iceberg.store.IcebergStore`.
"""
