"""The Spark engine (``index-builder build --engine spark``, ``INDEX_BUILDER_ENGINE``).

One Spark job builds every planned index: Spark reads the bars (the Parquet files of
the lake's snapshot, planned by pyiceberg, or a Parquet export of a DuckDB store),
ranks the eligible securities of every index on every reference date at once, cuts
each index's panel down to the securities it can ever select, and runs the shared
kernel (:func:`index_builder.engine.kernel.compute_index`) on each of those panels in
a grouped Arrow UDF, one index per group, in parallel. The driver stores the results
through the same path as the NumPy engine (:mod:`index_builder.services.builds`).

* :mod:`.session`: the one SparkSession of a process (master from the settings).
* :mod:`.reader`: the bars as Spark DataFrames (lake snapshot or DuckDB export),
  point in time.
* :mod:`.build`: the job.

pyspark is an optional dependency (``pip install 'index-builder[spark]'``, Java 17+):
nothing here imports it until a Spark build runs.
"""
