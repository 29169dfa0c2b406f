"""The one SparkSession of a process.

``spark_session`` starts it once (a local JVM takes 15 s or more to start) and hands
the same session to every later build of the process: a CLI build, a test session.
Its master comes from ``INDEX_BUILDER_SPARK_MASTER`` (default ``local[*]``; a cluster:
``spark://host:7077``, ``yarn``, ``k8s://...``).

In local mode:

* Spark's Python workers run this interpreter (``PYSPARK_PYTHON`` is set to
  :data:`sys.executable` unless already set): they import ``index_builder`` from the
  same environment as the driver;
* Spark binds to the loopback address (``SPARK_LOCAL_IP=127.0.0.1``, no web UI): no
  port is opened beyond it;
* shuffles use few partitions (a handful of indices, two cores).

On a cluster every executor needs ``index-builder[spark]`` installed in the Python
that ``PYSPARK_PYTHON`` names there (see docs/architecture.md, "Spark engine").
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from index_builder.errors import InvalidInputError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DEFAULT_MASTER = "local[*]"
LOCAL_SHUFFLE_PARTITIONS = 4
"""Shuffle partitions in local mode (Spark's default of 200 is for clusters)."""

_lock = threading.Lock()
_session: SparkSession | None = None


@dataclass(frozen=True)
class SparkOptions:
    """How to reach Spark: its master URL and the driver's memory (local mode: the
    whole of Spark runs in the driver's JVM)."""

    master: str = DEFAULT_MASTER
    driver_memory: str = "2g"

    @property
    def local(self) -> bool:
        """True for Spark's local mode (``local``, ``local[N]``, ``local[*]``)."""
        return self.master == "local" or self.master.startswith("local[")


def spark_session(options: SparkOptions | None = None) -> SparkSession:
    """The process's SparkSession, started on first use with ``options`` (later calls
    get the running session whatever their options: a JVM is started once).

    Raises :class:`InvalidInputError` naming ``engine`` when pyspark or Java is
    missing."""
    opts = options or SparkOptions()
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise InvalidInputError(
            "the spark engine needs pyspark: pip install 'index-builder[spark]' (and Java 17+)",
            field="engine",
        ) from None
    global _session
    with _lock:
        if _session is not None and _session.sparkContext._jsc is not None:
            return _session  # started before (and not stopped since)
        active = SparkSession.getActiveSession()
        if active is not None:  # started by the caller (a notebook, spark-submit)
            _session = active
            return active
        if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
            raise InvalidInputError(
                "the spark engine needs Java 17 or later (java on PATH or JAVA_HOME)",
                field="engine",
            )
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        if opts.local:
            os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        quiet_pandas_warning()
        builder = (
            SparkSession.builder.master(opts.master)
            .appName("index-builder")
            .config("spark.driver.memory", opts.driver_memory)
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        )
        if opts.local:
            builder = (
                builder.config("spark.ui.enabled", "false")
                .config("spark.driver.host", "127.0.0.1")
                .config("spark.driver.bindAddress", "127.0.0.1")
                .config("spark.sql.shuffle.partitions", str(LOCAL_SHUFFLE_PARTITIONS))
                .config("spark.default.parallelism", str(LOCAL_SHUFFLE_PARTITIONS))
            )
        try:
            session = builder.getOrCreate()
        except Exception as exc:  # the JVM did not start (no Java, bad master URL)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidInputError(
                f"the spark engine could not start Spark (master {opts.master}): {first}",
                field="spark_master",
            ) from exc
        session.sparkContext.setLogLevel("ERROR")
        _session = session
        return session


def quiet_pandas_warning() -> None:
    """pyspark 4.x warns that it does not fully support pandas 3 on every pandas UDF
    set-up; the engine exchanges Arrow tables (``applyInArrow``), not pandas frames."""
    warnings.filterwarnings(
        "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
    )
