"""One SparkSession (local mode, two cores) for every Spark test of the process: a JVM
takes 15 s or more to start. Skipped where pyspark or Java is missing only when
INDEX_BUILDER_SKIP_SPARK is set; otherwise a missing Spark fails loudly."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_HERE = Path(__file__).resolve().parent
for _path in (_HERE.parent.parent, _HERE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from index_builder.engine.spark.session import spark_session  # noqa: E402

from spark_market import LOCAL  # noqa: E402


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """The process's SparkSession, local[2], started once."""
    if os.environ.get("INDEX_BUILDER_SKIP_SPARK"):
        pytest.skip("INDEX_BUILDER_SKIP_SPARK is set")
    session = spark_session(LOCAL)
    yield session
    session.stop()
