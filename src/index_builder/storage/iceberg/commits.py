"""The lake's commit log and its writer lease, two small tables in the catalog database.

pyiceberg commits one table at a time, so a write that changes several tables (an
ingestion: bars, their history, the run; a build: levels, compositions, state) would
be seen half done by a reader that read each table's newest snapshot. Instead a write
ends by appending one row to ``index_builder_commits`` holding every table's snapshot
id: readers read the tables at the snapshots of the newest row, so they see a write
whole or not at all. The row is the commit point.

One process writes at a time: it holds the lease (``index_builder_lease``), a row it
renews while it writes; another process waits for it, and takes it over once it has
expired (its holder died). Table commits stay optimistic underneath (pyiceberg checks
the metadata it started from), so a writer whose lease was taken over fails instead of
overwriting.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from index_builder.errors import StorageBusyError, StorageError

log = logging.getLogger("index_builder.storage.lake")

_METADATA = sa.MetaData()

COMMITS = sa.Table(
    "index_builder_commits",
    _METADATA,
    sa.Column("namespace", sa.String(255), primary_key=True),
    sa.Column("commit_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("writer", sa.String(255), nullable=False),
    sa.Column("operation", sa.String(64), nullable=False),
    sa.Column("snapshots", sa.Text, nullable=False),
)

LEASES = sa.Table(
    "index_builder_lease",
    _METADATA,
    sa.Column("namespace", sa.String(255), primary_key=True),
    sa.Column("holder", sa.String(255)),
    sa.Column("token", sa.String(64)),
    sa.Column("expires_at", sa.DateTime),
    # false while held, and after a holder that failed (or died) mid-write: the next
    # holder then checks every table for snapshots no version recorded
    sa.Column("clean", sa.Boolean, nullable=False, default=False),
)

COUNTERS = sa.Table(
    "index_builder_counters",
    _METADATA,
    sa.Column("namespace", sa.String(255), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)


@dataclass(frozen=True)
class LakeCommit:
    """One row of the commit log: every table's snapshot id after one write."""

    commit_id: int
    created_at: dt.datetime
    writer: str
    operation: str
    snapshots: dict[str, int | None]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class CommitLog:
    """The commit log and the lease of one namespace in one catalog database."""

    def __init__(self, engine: sa.Engine, namespace: str) -> None:
        self.engine = engine
        self.namespace = namespace

    def create(self) -> None:
        """Create the two tables when missing."""
        _METADATA.create_all(self.engine, checkfirst=True)

    def head(self) -> LakeCommit | None:
        """The newest commit (None: nothing written yet)."""
        query = (
            sa.select(COMMITS)
            .where(COMMITS.c.namespace == self.namespace)
            .order_by(COMMITS.c.commit_id.desc())
            .limit(1)
        )
        with self.engine.connect() as con:
            row = con.execute(query).mappings().first()
        return None if row is None else _commit(row)

    def head_id(self) -> int:
        """The newest commit id (0: nothing written yet): cheap, for polling."""
        query = sa.select(sa.func.max(COMMITS.c.commit_id)).where(
            COMMITS.c.namespace == self.namespace
        )
        with self.engine.connect() as con:
            value = con.execute(query).scalar()
        return int(value or 0)

    def all(self) -> list[LakeCommit]:
        """Every commit, oldest first."""
        query = (
            sa.select(COMMITS)
            .where(COMMITS.c.namespace == self.namespace)
            .order_by(COMMITS.c.commit_id)
        )
        with self.engine.connect() as con:
            return [_commit(row) for row in con.execute(query).mappings()]

    def append(
        self, after: int, writer: str, operation: str, snapshots: dict[str, int | None]
    ) -> LakeCommit:
        """Record commit ``after + 1``; a ConflictError when another writer recorded
        it first (the lease was lost)."""
        commit = LakeCommit(after + 1, _utc_now(), writer, operation, dict(snapshots))
        try:
            with self.engine.begin() as con:
                con.execute(
                    COMMITS.insert().values(
                        namespace=self.namespace,
                        commit_id=commit.commit_id,
                        created_at=commit.created_at,
                        writer=writer,
                        operation=operation,
                        snapshots=json.dumps(snapshots, sort_keys=True),
                    )
                )
        except IntegrityError:
            raise StorageBusyError(
                "another process committed to the lake during this write (its writer "
                "lease was lost); nothing of this write is visible: run it again",
                field="storage",
            ) from None
        return commit

    def next_value(self, name: str, at_least: int) -> int:
        """An increasing counter shared by every process (build versions): the next
        value, above ``at_least`` (the largest the lake holds)."""
        try:
            with self.engine.begin() as con:
                current = con.execute(
                    sa.select(COUNTERS.c.value)
                    .where(COUNTERS.c.namespace == self.namespace, COUNTERS.c.name == name)
                    .with_for_update()
                ).scalar()
                value = max(int(current or 0), at_least) + 1
                if current is None:
                    con.execute(
                        COUNTERS.insert().values(namespace=self.namespace, name=name, value=value)
                    )
                else:
                    con.execute(
                        COUNTERS.update()
                        .where(COUNTERS.c.namespace == self.namespace, COUNTERS.c.name == name)
                        .values(value=value)
                    )
        except SQLAlchemyError as exc:
            raise StorageError(f"the lake catalog cannot be reached: {exc}") from exc
        return value


def _commit(row: Any) -> LakeCommit:
    return LakeCommit(
        commit_id=int(row["commit_id"]),
        created_at=row["created_at"],
        writer=row["writer"],
        operation=row["operation"],
        snapshots={
            k: (None if v is None else int(v)) for k, v in json.loads(row["snapshots"]).items()
        },
    )


class WriterLease:
    """The right to write one namespace, held by one process at a time.

    ``acquire`` waits up to ``wait_seconds`` for another holder; a lease that was not
    renewed for ``lease_seconds`` is taken over. While held, a thread renews it every
    third of its length.
    """

    def __init__(
        self,
        log_: CommitLog,
        holder: str,
        *,
        lease_seconds: float = 60.0,
        wait_seconds: float = 30.0,
    ) -> None:
        self._log = log_
        self.holder = holder
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self._token: str | None = None
        self.found_clean = False
        """Whether the previous holder released the lease after a clean write."""
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.lost = False
        """True when a renewal found the lease taken over (the write must fail)."""

    @property
    def held(self) -> bool:
        return self._token is not None

    def acquire(self) -> None:
        """Take the lease (waiting for another holder); ConflictError after the wait."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.wait_seconds
        delay = 0.05
        while True:
            other = self._try(token)
            if other is None:
                break
            if time.monotonic() >= deadline:
                holder, expires = other
                raise StorageBusyError(
                    f"the lake is being written by {holder} (its lease runs until "
                    f"{expires:%Y-%m-%d %H:%M:%S} UTC); try again when it is done",
                    field="storage",
                )
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        self._token = token
        self.lost = False
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name="lake-lease", daemon=True)
        self._renewer.start()

    def release(self, *, clean: bool = True) -> None:
        """Give the lease back (if still ours); ``clean``: no table snapshot of a
        failed write is left behind."""
        token, self._token = self._token, None
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
            self._renewer = None
        if token is None:
            return
        try:
            with self._log.engine.begin() as con:
                con.execute(
                    LEASES.update()
                    .where(LEASES.c.namespace == self._log.namespace, LEASES.c.token == token)
                    .values(holder=None, token=None, expires_at=None, clean=clean)
                )
        except SQLAlchemyError as exc:  # it expires by itself
            log.warning("could not release the lake writer lease: %s", exc)

    def _try(self, token: str) -> tuple[str, dt.datetime] | None:
        """Take the lease if free or expired; else (holder, expiry) of the other one."""
        now = _utc_now()
        expires = now + dt.timedelta(seconds=self.lease_seconds)
        table = LEASES
        try:
            with self._log.engine.begin() as con:
                row = con.execute(
                    sa.select(
                        table.c.holder, table.c.token, table.c.expires_at, table.c.clean
                    ).where(table.c.namespace == self._log.namespace)
                ).first()
                if row is None:
                    try:
                        con.execute(
                            table.insert().values(
                                namespace=self._log.namespace,
                                holder=self.holder,
                                token=token,
                                expires_at=expires,
                                clean=False,
                            )
                        )
                    except IntegrityError:
                        return ("another process", now)
                    self.found_clean = False
                    return None
                holder, current, until, clean = row
                if current is not None and until is not None and until > now:
                    return (holder or "another process", until)
                done = con.execute(
                    table.update()
                    .where(
                        table.c.namespace == self._log.namespace,
                        # compare-and-set: nobody took it since we looked
                        (table.c.token == current)
                        if current is not None
                        else table.c.token.is_(None),
                    )
                    .values(holder=self.holder, token=token, expires_at=expires, clean=False)
                )
                if done.rowcount != 1:
                    return (holder or "another process", now)
                self.found_clean = bool(clean) and current is None
                if current is not None:
                    log.warning("took over the lake writer lease of %s (expired)", holder)
                return None
        except SQLAlchemyError as exc:
            raise StorageError(f"the lake catalog cannot be reached: {exc}") from exc

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            token = self._token
            if token is None:
                return
            try:
                with self._log.engine.begin() as con:
                    done = con.execute(
                        LEASES.update()
                        .where(LEASES.c.namespace == self._log.namespace, LEASES.c.token == token)
                        .values(expires_at=_utc_now() + dt.timedelta(seconds=self.lease_seconds))
                    )
                if done.rowcount != 1:
                    self.lost = True
                    log.error("the lake writer lease was taken over by another process")
                    return
            except SQLAlchemyError as exc:
                log.warning("could not renew the lake writer lease: %s", exc)
