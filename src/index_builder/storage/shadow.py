"""Shadow storage: every write to two backends, a sample of the reads compared.

With the ``shadow_storage`` feature flag on, :func:`~index_builder.storage.factory.make_store`
returns a :class:`ShadowStore` over two stores: the **primary** (the backend
``INDEX_BUILDER_STORAGE`` names) and the **shadow** (the other backend, as the same
settings configure it). It is the step between copying a store to the other backend
(``index-builder migrate-storage``) and switching the primary (docs/operations.md):

* **Reads** are served by the primary. A sample of them
  (``INDEX_BUILDER_SHADOW_SAMPLE_RATE``) is repeated on the shadow and the two answers
  are compared for exact equality (values, dataclasses field by field, Arrow tables,
  NumPy arrays with NaN equal to NaN; errors by type and message). Two fields are
  left out because each backend sets them itself: a build's ``built_at`` (the
  database's clock at commit) and a version's lake ``snapshots`` (None on DuckDB).
  A comparison that overlaps a write of this process is skipped (the two reads could
  see different states); a shadow that cannot answer (storage unavailable) counts as
  a read failure, not a mismatch.
* **Writes** go to the primary, then to the shadow with the same arguments, one write
  at a time (so both stores hand out run ids, build versions, cycle ids and version
  ids in the same order), and the two results are compared too (run ids, reports,
  build versions...). Ingestion input is read once: a stream is written to a Parquet
  file in ``spool_dir`` as the primary reads it, and the shadow reads that file. The
  shadow's clock replays the primary's readings of the clock during the same write
  (:class:`ShadowClock`), so the two stores record the same ``known_at`` and the
  same run and version times.
* **Failures**: the primary's answer (or error) is always the request's. A shadow
  write that fails, any mismatch, or a shadow that is not a copy of the primary when
  the process starts (row counts, newest version, newest run) makes the shadow
  **diverged**: logged, counted (``index_builder_shadow_*`` metrics), shown by
  readiness as the ``shadow_storage`` component (``degraded``, never ``down``), and
  from then on the shadow is neither written nor compared (it no longer holds what
  the primary holds): re-sync it with ``index-builder migrate-storage`` (a DuckDB
  shadow: ``--force``; a lake shadow: into an empty namespace or warehouse) and
  restart.
* **Whole-store operations** (``snapshot``, ``read_table``, ``load_tables``) act on
  the primary: a backup is the primary's; a restore through this store diverges the
  shadow.

Raw transactions (``transaction()``, the API's job records) are recorded on the
primary and replayed on the shadow statement by statement after they commit there.
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
import math
import random
import reprlib
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from index_builder.engine.definitions import IndexDefinition
from index_builder.engine.panel import MarketPanel
from index_builder.errors import IndexBuilderError, StorageError
from index_builder.ops import logging as _logging  # noqa: F401  (structlog configured)
from index_builder.ops.metrics import (
    SHADOW_COMPARISONS,
    SHADOW_DIVERGED,
    SHADOW_MISMATCHES,
    SHADOW_READ_FAILURES,
    SHADOW_WRITE_FAILURES,
)
from index_builder.point_in_time import utc_now
from index_builder.storage.base import (
    BuildState,
    IngestReport,
    LevelRows,
    ProgressCallback,
    VersionInfo,
)
from index_builder.storage.duckdb.store import DuckDBStore
from index_builder.storage.tables import PERSISTENT_TABLES

if TYPE_CHECKING:
    import datetime as dt

    import duckdb

    from index_builder.ops.flags import FlagStore

events = structlog.get_logger("index_builder.storage.shadow")
"""Shadow events, structured: ``operation`` (the store operation, e.g. ``read_levels``),
``arguments``, ``difference`` or ``error``; rendered by the project's log handler."""

T = TypeVar("T")
Arguments = Callable[[], dict[str, Any]]
"""A store operation's arguments, bound only when a log line needs them."""

SPOOL_BATCH_ROWS = 1 << 16
"""Rows per batch the shadow reads back from a spooled ingestion input."""

IGNORED_FIELDS: dict[type, frozenset[str]] = {
    BuildState: frozenset({"built_at"}),
    VersionInfo: frozenset({"snapshots"}),
}
"""Fields each backend sets itself, left out of comparisons."""


def _sparse_by_cell(panel: MarketPanel) -> MarketPanel:
    """A panel whose sparse actions and volumes (sets of cells, in no particular order:
    each backend scans its files in its own) are sorted by cell."""

    def by_cell(arrays: Any) -> Any:
        if arrays is None:
            return None
        order = np.argsort(arrays[0], kind="stable")
        return tuple(np.asarray(a)[order] for a in arrays)

    return dataclasses.replace(
        panel, actions=by_cell(panel.actions), volumes=by_cell(panel.volumes)
    )


CANONICAL: dict[type, Callable[[Any], Any]] = {MarketPanel: _sparse_by_cell}
"""Values whose parts come in no particular order, put in one before comparing."""

_REPR = reprlib.Repr()
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = 6
_REPR.maxstring = _REPR.maxother = 120


# ---------------------------------------------------------------------------- clock
class ShadowClock:
    """The clocks of the two stores: the primary's reads ``base`` and, during a write,
    notes each reading (per thread); the shadow's replays those readings in order
    while it makes the same write, so both record the same times (``known_at``, run
    start and end, version creation). Outside a replay, or once the readings run
    out, the shadow reads ``base``."""

    def __init__(self, base: Callable[[], dt.datetime] = utc_now) -> None:
        self._base = base
        self._local = threading.local()

    def primary(self) -> dt.datetime:
        now = self._base()
        notes: list[dt.datetime] | None = getattr(self._local, "notes", None)
        if notes is not None:
            notes.append(now)
        return now

    def shadow(self) -> dt.datetime:
        queue: collections.deque[dt.datetime] | None = getattr(self._local, "queue", None)
        if queue:
            return queue.popleft()
        return self._base()

    @contextmanager
    def recording(self) -> Iterator[list[dt.datetime]]:
        """The primary's readings on this thread while the block runs."""
        previous = getattr(self._local, "notes", None)
        notes: list[dt.datetime] = []
        self._local.notes = notes
        try:
            yield notes
        finally:
            self._local.notes = previous

    @contextmanager
    def replaying(self, readings: Sequence[dt.datetime]) -> Iterator[None]:
        """The shadow's clock answers ``readings`` on this thread, in order."""
        previous = getattr(self._local, "queue", None)
        self._local.queue = collections.deque(readings)
        try:
            yield
        finally:
            self._local.queue = previous


# ---------------------------------------------------------------------------- comparison
@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one store answered: a value, or an error."""

    value: Any = None
    error: Exception | None = None

    def describe(self) -> str:
        if self.error is not None:
            return f"{type(self.error).__name__}: {_message(self.error)}"
        return _REPR.repr(self.value)

    def unwrap(self) -> Any:
        """The value, or the error raised."""
        if self.error is not None:
            raise self.error
        return self.value


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, IndexBuilderError) else str(exc)


def outcome_difference(mine: Outcome, theirs: Outcome) -> str | None:
    """None when both stores answered alike, else what differs (one line)."""
    if mine.error is not None or theirs.error is not None:
        if mine.error is None or theirs.error is None:
            return f"primary: {mine.describe()}; shadow: {theirs.describe()}"
        same_type = type(mine.error) is type(theirs.error)
        # storage errors name each backend's own failure: their kind is what matters
        same_text = isinstance(mine.error, StorageError) or _message(mine.error) == _message(
            theirs.error
        )
        if same_type and same_text:
            return None
        return f"primary raised {mine.describe()}; shadow raised {theirs.describe()}"
    return difference(mine.value, theirs.value)


def difference(a: Any, b: Any, path: str = "") -> str | None:
    """None when ``a`` and ``b`` are exactly equal (see the module docstring), else the
    first difference found, with where it is (``[3].level``, ``prices``...)."""
    where = path.lstrip(".") or "result"
    if type(a) is not type(b):
        return f"{where}: {type(a).__name__} {_REPR.repr(a)} != {type(b).__name__} {_REPR.repr(b)}"
    canonical = CANONICAL.get(type(a))
    if canonical is not None:
        a, b = canonical(a), canonical(b)
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        ignored = IGNORED_FIELDS.get(type(a), frozenset())
        for f in dataclasses.fields(a):
            if f.name not in ignored:
                found = difference(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
                if found:
                    return found
        return None
    if isinstance(a, pa.Table):
        return _table_difference(a, b, where)
    if isinstance(a, np.ndarray):
        return _array_difference(a, b, where)
    if isinstance(a, dict):
        if a.keys() != b.keys():
            only_a = sorted(map(str, a.keys() - b.keys()))
            only_b = sorted(map(str, b.keys() - a.keys()))
            return f"{where}: keys only in the primary {only_a}, only in the shadow {only_b}"
        for key in a:
            inner = (
                f"{path}.{key}"
                if isinstance(key, str) and key.isidentifier()
                else f"{path}[{key!r}]"
            )
            found = difference(a[key], b[key], inner)
            if found:
                return found
        return None
    if isinstance(a, list | tuple):
        if len(a) != len(b):
            return f"{where}: {len(a)} items != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(a, float) and math.isnan(a) and math.isnan(b):
        return None
    try:
        equal = bool(a == b)
    except Exception:  # a type whose == is not a truth value
        equal = False
    return None if equal else f"{where}: {_REPR.repr(a)} != {_REPR.repr(b)}"


def _table_difference(a: pa.Table, b: pa.Table, where: str) -> str | None:
    if a.schema != b.schema:
        return f"{where}: schema {a.schema.to_string()!r} != {b.schema.to_string()!r}"
    if a.num_rows != b.num_rows:
        return f"{where}: {a.num_rows} rows != {b.num_rows} rows"
    if a.equals(b):
        return None
    for name in a.column_names:  # NaN is not equal to itself in Arrow: compare values
        found = difference(a[name].to_pylist(), b[name].to_pylist(), f"{where}.{name}")
        if found:
            return found
    return None


def _array_difference(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any], where: str) -> str | None:
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"{where}: array {a.dtype}{a.shape} != {b.dtype}{b.shape}"
    if a.dtype == object:
        return difference(a.tolist(), b.tolist(), where)
    if a.dtype.kind in "fc":
        differ = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    elif a.dtype.kind in "mM":
        differ = ~((a == b) | (np.isnat(a) & np.isnat(b)))
    else:
        differ = a != b
    if not differ.any():
        return None
    first = tuple(int(i) for i in np.argwhere(differ)[0])
    return f"{where}{list(first)}: {a[first]!r} != {b[first]!r} ({int(differ.sum())} cells differ)"


BRIEF: dict[type, Callable[[Any], str]] = {
    IndexDefinition: lambda d: f"<definition {d.id}>",
    BuildState: lambda s: f"<build {s.index_id} v{s.version}>",
    LevelRows: lambda rows: f"<{len(rows.dates)} level rows>",
    pa.Table: lambda table: f"<table of {table.num_rows} rows>",
}
"""Arguments shown by what identifies them rather than by their content."""


def describe_arguments(arguments: dict[str, Any]) -> str:
    """Arguments for a log line, each shortened (store operations take ids, dates,
    symbols, definitions and results; never credentials)."""

    def brief(value: Any) -> str:
        shown = BRIEF.get(type(value))
        if shown is not None:
            return shown(value)
        if isinstance(value, list | tuple) and value:
            items = ", ".join(brief(v) for v in value[:4])
            more = f", ... ({len(value)} items)" if len(value) > 4 else ""
            return f"[{items}{more}]" if isinstance(value, list) else f"({items}{more})"
        return _REPR.repr(value)

    return ", ".join(f"{k}={brief(v)}" for k, v in arguments.items())


# ---------------------------------------------------------------------------- input spool
class _Tee:
    """Passes an ingestion stream to the primary and writes each batch to a Parquet
    file as it goes by, so the shadow can read the same input afterwards (memory: one
    batch). An error of the stream itself is kept and raised again at the same place
    of the shadow's copy; a spool that cannot be written only fails the shadow."""

    def __init__(self, source: pa.RecordBatchReader, path: Path) -> None:
        self.source = source
        self.path = path
        self.error: Exception | None = None
        self.spool_error: str | None = None
        self.exhausted = False
        self._writer: pq.ParquetWriter | None = None
        try:
            self._writer = pq.ParquetWriter(path, source.schema)
        except (OSError, pa.ArrowException) as exc:
            self.spool_error = f"cannot write {path}: {exc}"

    def reader(self) -> pa.RecordBatchReader:
        """The stream for the primary."""
        return pa.RecordBatchReader.from_batches(self.source.schema, self._batches())

    def _batches(self) -> Iterator[pa.RecordBatch]:
        try:
            for batch in self.source:
                self._spool(batch)
                yield batch
        except Exception as exc:
            self.error = exc
            raise
        self.exhausted = True

    def _spool(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            return
        try:
            self._writer.write_batch(batch)
        except (OSError, pa.ArrowException) as exc:
            self.spool_error = f"cannot write {self.path}: {exc}"
            self._close()

    def _close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.close()
            except (OSError, pa.ArrowException) as exc:
                self.spool_error = self.spool_error or f"cannot write {self.path}: {exc}"

    def replay(self) -> pa.RecordBatchReader:
        """The same stream again, for the shadow (read from the spool file)."""
        self._close()
        if self.spool_error is not None:
            raise StorageError(
                f"the ingestion input was not kept for the shadow: {self.spool_error}"
            )
        if not self.exhausted and self.error is None:
            raise StorageError(
                "the primary did not read the whole ingestion input: the shadow cannot be "
                "given the same input"
            )
        parquet = pq.ParquetFile(self.path)
        error = self.error

        def batches() -> Iterator[pa.RecordBatch]:
            yield from parquet.iter_batches(batch_size=SPOOL_BATCH_ROWS)
            if error is not None:
                raise error

        return pa.RecordBatchReader.from_batches(parquet.schema_arrow, batches())


# ---------------------------------------------------------------------------- the store
class ShadowStore(DuckDBStore):
    """A primary store and its shadow behind the one store interface (see the module
    docstring). Attributes this class does not define (``path``, ``calendar``, a lake
    store's ``head``...) are the primary's."""

    # DuckDBStore.__init__ is not called: this object holds no connection of its own,
    # and every attribute it does not set is looked up on the primary (__getattr__)
    def __init__(
        self,
        primary: DuckDBStore,
        shadow: DuckDBStore,
        *,
        sample_rate: float = 0.05,
        clocks: ShadowClock | None = None,
        spool_dir: Path | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 0.0 <= sample_rate <= 1.0 or math.isnan(sample_rate):
            raise ValueError(f"sample_rate must be between 0 and 1, got {sample_rate}")
        self.primary = primary
        self.shadow = shadow
        self.capabilities = primary.capabilities
        self.sample_rate = sample_rate
        self.clocks = clocks or ShadowClock()
        self.spool_dir = spool_dir
        self.diverged: str | None = None
        """Why the shadow is no longer written or compared (None: it is in step)."""
        self.counts: collections.Counter[str] = collections.Counter()
        """comparisons, mismatches, write_failures, read_failures (this process)."""
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._serial = threading.RLock()
        self._state_lock = threading.Lock()
        self._started = 0
        self._finished = 0
        self._thread = threading.local()
        self._opened = False
        self._shadow_open = False

    def __getattr__(self, name: str) -> Any:
        primary = self.__dict__.get("primary")
        if primary is None:
            raise AttributeError(name)
        return getattr(primary, name)

    # ------------------------------------------------------------------ state
    @property
    def active(self) -> bool:
        """Whether the shadow is open and in step (written and compared)."""
        return self._shadow_open and self.diverged is None

    def _count(self, what: str, operation: str) -> None:
        with self._state_lock:
            self.counts[what] += 1
        metric = {
            "comparisons": SHADOW_COMPARISONS,
            "mismatches": SHADOW_MISMATCHES,
            "write_failures": SHADOW_WRITE_FAILURES,
            "read_failures": SHADOW_READ_FAILURES,
        }[what]
        metric.labels(operation=operation).inc()

    def _diverge(self, reason: str) -> None:
        with self._state_lock:
            if self.diverged is not None:
                return
            self.diverged = reason
        SHADOW_DIVERGED.set(1)
        events.error(
            "shadow store diverged: no longer written or compared",
            shadow=_label(self.shadow),
            primary=_label(self.primary),
            reason=reason,
            resync=_resync_hint(self.shadow),
        )

    def _mismatch(self, operation: str, arguments: Arguments, detail: str) -> None:
        self._count("mismatches", operation)
        args = describe_arguments(arguments())
        events.error("shadow mismatch", operation=operation, arguments=args, difference=detail)
        self._diverge(f"{operation}({args}) answered differently: {detail}")

    def _sampled(self) -> bool:
        in_snapshot = int(getattr(self._thread, "snapshot", 0)) > 0
        if not self.active or self.sample_rate <= 0 or in_snapshot:
            return False
        if self.sample_rate >= 1:
            return True
        with self._rng_lock:
            return self._rng.random() < self.sample_rate

    # ------------------------------------------------------------------ reads and writes
    def _read(self, operation: str, arguments: Arguments, call: Callable[[DuckDBStore], T]) -> T:
        """``call`` on the primary; when sampled, on the shadow too, compared."""
        if not self._sampled():
            return call(self.primary)
        started, finished = self._started, self._finished
        if started != finished:  # a write is under way: the two could read different states
            return call(self.primary)
        try:
            mine = Outcome(value=call(self.primary))
        except StorageError:
            raise  # the primary is unavailable: nothing to compare
        except Exception as exc:
            mine = Outcome(error=exc)
        try:
            self._compare_read(operation, arguments, call, mine, started)
        except Exception:  # never the request's problem
            self._count("read_failures", operation)
            events.exception("shadow comparison failed", operation=operation)
        return cast(T, mine.unwrap())

    def _compare_read(
        self,
        operation: str,
        arguments: Arguments,
        call: Callable[[DuckDBStore], Any],
        mine: Outcome,
        started: int,
    ) -> None:
        try:
            theirs = Outcome(value=call(self.shadow))
        except StorageError as exc:
            self._count("read_failures", operation)
            events.warning(
                "shadow store could not answer a read",
                operation=operation,
                arguments=describe_arguments(arguments()),
                error=exc.message,
            )
            return
        except Exception as exc:
            theirs = Outcome(error=exc)
        if self._started != started or not self.active:
            return  # a write began meanwhile: not comparable
        self._count("comparisons", operation)
        found = outcome_difference(mine, theirs)
        if found is not None:
            self._mismatch(operation, arguments, found)

    def _write(
        self,
        operation: str,
        arguments: Arguments,
        call: Callable[[DuckDBStore], T],
        shadow_call: Callable[[DuckDBStore], T] | None = None,
    ) -> T:
        """``call`` on the primary, then (``shadow_call`` or ``call``) on the shadow,
        the results compared; one write at a time. The primary's result or error is
        the answer, whatever the shadow does."""
        if not self.active:
            return call(self.primary)
        with self._serial:
            if not self.active:
                return call(self.primary)
            with self._state_lock:
                self._started += 1
            try:
                with self.clocks.recording() as readings:
                    try:
                        mine = Outcome(value=call(self.primary))
                    except Exception as exc:
                        mine = Outcome(error=exc)
                    except BaseException:
                        self._diverge(f"{operation} was interrupted on the primary")
                        raise
                self._follow(operation, arguments, shadow_call or call, readings, mine)
            finally:
                with self._state_lock:
                    self._finished += 1
        return cast(T, mine.unwrap())

    def _follow(
        self,
        operation: str,
        arguments: Arguments,
        call: Callable[[DuckDBStore], Any],
        readings: list[dt.datetime],
        mine: Outcome,
    ) -> None:
        """The same write on the shadow, compared (a failure or a difference diverges it)."""
        try:
            with self.clocks.replaying(readings):
                theirs = Outcome(value=call(self.shadow))
        except Exception as exc:
            if mine.error is None:
                self._count("write_failures", operation)
                args = describe_arguments(arguments())
                events.error(
                    "shadow write failed",
                    operation=operation,
                    arguments=args,
                    error=f"{type(exc).__name__}: {_message(exc)}",
                )
                self._diverge(f"{operation}({args}) failed on the shadow: {_message(exc)}")
                return
            theirs = Outcome(error=exc)
        except BaseException:
            self._diverge(f"{operation} was interrupted on the shadow")
            raise
        self._count("comparisons", operation)
        found = outcome_difference(mine, theirs)
        if found is not None:
            self._mismatch(operation, arguments, found)

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> ShadowStore:
        """Open the primary (its errors are the caller's), then the shadow (a failure
        diverges it), and check that the shadow is a copy of the primary."""
        self.primary.open()
        if self._opened:
            return self
        self._opened = True
        try:
            self.shadow.open()
        except Exception as exc:
            self._count("write_failures", "open")
            self._diverge(f"the shadow store cannot be opened: {_message(exc)}")
            return self
        self._shadow_open = True
        if self.diverged is None:
            SHADOW_DIVERGED.set(0)
            self._check_in_step()
        return self

    def _check_in_step(self) -> None:
        """Diverged unless both stores hold as many rows in every table, the same
        newest version and the same newest run (what a migration leaves)."""
        try:
            mine, theirs = _step_state(self.primary), _step_state(self.shadow)
        except Exception as exc:
            self._count("read_failures", "open")
            self._diverge(f"the stores cannot be compared at start: {_message(exc)}")
            return
        self._count("comparisons", "open")
        found = difference(mine, theirs)
        if found is not None:
            self._count("mismatches", "open")
            self._diverge(f"the shadow is not a copy of the primary ({found})")

    def close(self) -> None:
        """Close both stores."""
        if self._shadow_open:
            try:
                self.shadow.close()
            except Exception as exc:  # the primary still closes
                events.warning("closing the shadow store failed", error=_message(exc))
            self._shadow_open = False
        self._opened = False
        self.primary.close()

    def describe(self) -> dict[str, str]:
        """The primary's description, and the shadow's label and state."""
        info = dict(self.primary.describe())
        info["shadow"] = _label(self.shadow)
        info["shadow_state"] = "in step" if self.active else f"diverged: {self.diverged}"
        return info

    def health(self) -> dict[str, object]:
        """The readiness component ``shadow_storage`` (degraded while diverged)."""
        with self._state_lock:
            counts = dict(self.counts)
        body: dict[str, object] = {
            "status": "ok" if self.active else "degraded",
            "primary": _label(self.primary),
            "shadow": _label(self.shadow),
            "diverged": not self.active,
            "sample_rate": self.sample_rate,
            **{k: counts.get(k, 0) for k in _COUNTS},
        }
        if self.diverged is not None:
            body["detail"] = (
                f"{self.diverged}; not written or compared until re-synced with "
                f"{_resync_hint(self.shadow)}"
            )
        return body

    def refresh(self, *, force: bool = False) -> bool:
        """The primary reads the newest version another process wrote (its answer), and
        so does the shadow (a failure there is logged)."""
        changed = self.primary.refresh(force=force)
        if self.active:
            try:
                self.shadow.refresh(force=force)
            except Exception as exc:
                self._count("read_failures", "refresh")
                events.warning("shadow store refresh failed", error=_message(exc))
        return changed

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """The primary's snapshot (reads inside are not compared)."""
        depth = getattr(self._thread, "snapshot", 0)
        self._thread.snapshot = depth + 1
        try:
            with self.primary.snapshot():
                yield
        finally:
            self._thread.snapshot = depth

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A transaction on the primary whose statements are replayed in one transaction
        on the shadow once the primary committed (the API's job records)."""
        current: _RecordingConnection | None = getattr(self._thread, "recorder", None)
        if current is not None:  # nested: joins the open one
            yield cast("duckdb.DuckDBPyConnection", current)
            return
        if not self.active:
            with self.primary.transaction() as tx:
                yield tx
            return
        with self._state_lock:
            self._started += 1
        try:
            with self.primary.transaction() as tx:
                recorder = _RecordingConnection(tx)
                self._thread.recorder = recorder
                try:
                    yield cast("duckdb.DuckDBPyConnection", recorder)
                finally:
                    self._thread.recorder = None
            if recorder.calls:
                self._replay(recorder.calls)
        finally:
            with self._state_lock:
                self._finished += 1

    def _replay(self, calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> None:
        if not self.active:
            return
        statements = [str(args[0])[:80] if args else name for name, args, _ in calls]
        try:
            with self.shadow.transaction() as tx:
                for name, args, kwargs in calls:
                    getattr(tx, name)(*args, **kwargs)
        except Exception as exc:
            self._count("write_failures", "transaction")
            events.error(
                "shadow write failed",
                operation="transaction",
                arguments=str(statements),
                error=_message(exc),
            )
            self._diverge(f"transaction({statements}) failed on the shadow: {_message(exc)}")

    # ------------------------------------------------------------------ whole store
    def load_tables(self, tables: dict[str, pa.RecordBatchReader | pa.Table]) -> None:
        """Into the primary only (the tables are streams read once): the shadow then
        holds something else, so it is diverged."""
        self.primary.load_tables(tables)
        if self._shadow_open:
            self._diverge("load_tables (a restore) wrote the primary only")

    # ------------------------------------------------------------------ ingestion
    def ingest(
        self,
        securities: pa.Table,
        prices: pa.RecordBatchReader | pa.Table,
        *,
        provider: str,
        params: dict[str, Any],
        progress: ProgressCallback | None = None,
    ) -> IngestReport:
        if not self.active:
            return self.primary.ingest(
                securities, prices, provider=provider, params=params, progress=progress
            )

        def arguments() -> dict[str, Any]:
            return {"provider": provider, "securities": securities.num_rows}

        if isinstance(prices, pa.Table):
            return self._write(
                "ingest",
                arguments,
                lambda s: s.ingest(
                    securities, prices, provider=provider, params=params, progress=progress
                ),
                lambda s: s.ingest(securities, prices, provider=provider, params=params),
            )
        with tempfile.TemporaryDirectory(prefix="index-builder-shadow-", dir=self._spool()) as d:
            tee = _Tee(prices, Path(d) / "prices.parquet")
            return self._write(
                "ingest",
                arguments,
                lambda s: s.ingest(
                    securities, tee.reader(), provider=provider, params=params, progress=progress
                ),
                lambda s: s.ingest(securities, tee.replay(), provider=provider, params=params),
            )

    def _spool(self) -> str | None:
        if self.spool_dir is None:
            return None
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        return str(self.spool_dir)


_COUNTS = ("comparisons", "mismatches", "write_failures", "read_failures")


# ---------------------------------------------------------------------------- delegation
# Every other store operation is generated from these lists: a read is served by the
# primary and, sampled, compared on the shadow (ShadowStore._read); a write runs on the
# primary, then on the shadow, both results compared (ShadowStore._write); the rest is
# the primary's alone. Signatures and types are DuckDBStore's (ShadowStore inherits them).
def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


READS = _names(
    """
    announcements as_of_builds broken_definitions build_state built_days
    count_spells current_build_states first_changed_date get_definition ingest_runs
    last_built_day last_ingest_run last_rebalance last_trading_day latest_run_id
    level_on list_definitions load_panel pinned_base_date price_versions quarantined
    read_levels reference_date_on rejection_counts schedule_runs security_master
    spells_from spells_overlapping stored_sessions table_counts trading_days
    variant_levels_on version versions
    """
)
"""Store reads: served by the primary, a sample compared with the shadow's answer."""

WRITES = _names(
    """
    delete_definition next_build_version next_cycle_id pin_base_date put_definition
    put_definitions quarantine_provider_rejects record_restore record_schedule_step
    rollback_data save_results set_run_outcome
    """
)
"""Store writes (and sequences handing out ids): the primary, then the shadow, compared."""

PRIMARY_ONLY = _names(
    """
    applied_migrations check_file cursor in_transaction load_stored_rows ping
    read_table refresh_due schema_version
    """
)
"""Connection-level, health and whole-store operations: the primary's alone (a backup
reads the primary; health is the primary's; the shadow's is the ``shadow_storage``
readiness component)."""


def _delegate(name: str, kind: str) -> Callable[..., Any]:
    """The ShadowStore method for DuckDBStore's ``name``: a ``read``, a ``write`` or
    ``primary`` only (see the lists above); arguments are bound for log lines only."""
    original = getattr(DuckDBStore, name)
    signature = inspect.signature(original)

    def operation(self: ShadowStore, *args: Any, **kwargs: Any) -> Any:
        def call(store: DuckDBStore) -> Any:
            return getattr(store, name)(*args, **kwargs)

        if kind == "primary":
            return call(self.primary)

        def arguments() -> dict[str, Any]:
            bound = signature.bind(self, *args, **kwargs).arguments
            return {key: value for key, value in bound.items() if key != "self"}

        run = self._read if kind == "read" else self._write
        return run(name, arguments, call)

    operation.__name__ = name
    operation.__qualname__ = f"ShadowStore.{name}"
    operation.__doc__ = original.__doc__
    operation.__signature__ = signature  # type: ignore[attr-defined]
    return operation


def _unshadowed(name: str) -> Callable[..., Any]:
    """A store operation added to DuckDBStore and not listed above: it runs on the
    primary only, so the shadow may now miss a write: diverged (and logged)."""

    def operation(self: ShadowStore, *args: Any, **kwargs: Any) -> Any:
        if self.active:
            events.error("store operation not shadowed (storage/shadow.py)", operation=name)
            self._diverge(f"operation {name} is not shadowed")
        return getattr(self.primary, name)(*args, **kwargs)

    operation.__name__ = name
    return operation


def _generate() -> None:
    """Add the generated operations to ShadowStore (at import)."""
    lists = {"read": READS, "write": WRITES, "primary": PRIMARY_ONLY}
    own = set(vars(ShadowStore))
    listed = [name for names in lists.values() for name in names]
    unknown = sorted(set(listed) - set(dir(DuckDBStore)))
    twice = sorted({n for n in listed if listed.count(n) > 1} | (own & set(listed)))
    if unknown or twice:  # a mistake in this file, found by any import
        raise RuntimeError(f"shadow delegation lists: unknown {unknown}, listed twice {twice}")
    for kind, names in lists.items():
        for name in names:
            setattr(ShadowStore, name, _delegate(name, kind))
    for name in dir(DuckDBStore):
        public = not name.startswith("_") and callable(getattr(DuckDBStore, name))
        if public and name not in own and name not in listed:
            setattr(ShadowStore, name, _unshadowed(name))


_generate()


class _RecordingConnection:
    """A transaction's connection that notes each statement run through it (to replay
    them on the shadow); anything else is the primary connection's."""

    _RECORDED = frozenset({"execute", "executemany"})

    def __init__(self, tx: duckdb.DuckDBPyConnection) -> None:
        self._tx = tx
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._tx, name)
        if name not in self._RECORDED:
            return target

        def recorded(*args: Any, **kwargs: Any) -> Any:
            result = target(*args, **kwargs)
            self.calls.append((name, args, kwargs))
            return result

        return recorded


def _step_state(store: DuckDBStore) -> dict[str, Any]:
    """What two stores in step agree on, cheaply: rows per table, newest version, newest run."""
    newest = store.versions(limit=1)
    counts = store.table_counts()
    return {
        "rows": {name: counts.get(name) for name in PERSISTENT_TABLES},
        "newest_version": newest[0].version_id if newest else 0,
        "latest_run": store.latest_run_id(),
    }


def _resync_hint(shadow: DuckDBStore) -> str:
    """How a diverged shadow is brought back in step (docs/operations.md)."""
    if shadow.capabilities.name == "duckdb":
        return "index-builder migrate-storage --to duckdb --force, then restart"
    return (
        "index-builder migrate-storage --to iceberg into an empty lake (another "
        "INDEX_BUILDER_LAKE_NAMESPACE or warehouse), then restart"
    )


def _label(store: DuckDBStore) -> str:
    from index_builder.storage.factory import storage_label

    try:
        return storage_label(store.describe())
    except Exception:  # describing never fails a health check
        return store.capabilities.name


def shadow_component(store: DuckDBStore, flags: FlagStore | None) -> dict[str, object] | None:
    """Readiness component ``shadow_storage``: the shadow's state when this process
    shadows; a note when the flag changed since the process started (it is read at
    start: a restart applies it). None: no shadow and the flag is off."""
    flag = flags.enabled("shadow_storage") if flags is not None else None
    if isinstance(store, ShadowStore):
        body = store.health()
        if flag is False:
            body["status"] = "degraded"
            body["restart_needed"] = True
            body["detail"] = "the shadow_storage flag is off now: restart to stop shadowing"
        return body
    if flag:
        return {
            "status": "degraded",
            "restart_needed": True,
            "detail": "the shadow_storage flag is on, but this process started without it: "
            "restart to shadow",
        }
    return None
