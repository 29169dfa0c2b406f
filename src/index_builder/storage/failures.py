"""Which errors mean "the storage cannot be reached", whatever layer raised them.

A store's own refusals are :class:`StorageError` already. Other failures of the
storage arrive as the error of the library that met them: DuckDB (an IO error, or an
error wrapping the Python exception of the fsspec file system it reads the lake
through: botocore's ``EndpointConnectionError`` inside s3fs, say), an ``OSError``
(pyarrow's file systems, local files), botocore / aiobotocore / s3fs / fsspec, the
catalog database (SQLAlchemy ``OperationalError``). :func:`storage_failure` turns
any of them into a :class:`StorageError` (API: 503 ``storage-unavailable`` with
``Retry-After``; CLI: exit code 1 with one line), and leaves every other error (a
bug, bad input) alone.
"""

from __future__ import annotations

import duckdb
import sqlalchemy.exc as sa_exc

from index_builder.errors import IndexBuilderError, StorageError

_REMOTE_MODULES = ("botocore", "aiobotocore", "s3fs", "fsspec", "gcsfs", "pyiceberg.exceptions")
"""Packages whose errors are failures of the object store or the catalog."""

_DUCKDB_STORAGE_CLASSES = (duckdb.IOException, duckdb.HTTPException, duckdb.PermissionException)

_STORAGE_TEXT = (
    # a Python exception of the file system DuckDB reads through (its traceback text)
    "botocore",
    "s3fs",
    "fsspec",
    "gcsfs",
    "endpointconnectionerror",
    "connecttimeouterror",
    "readtimeouterror",
    "connectionclosederror",
    "nocredentialserror",
    "filenotfounderror",
    "permissionerror",
    "connectionerror",
    "timeouterror",
    "oserror",
    # the object store's or the operating system's words
    "could not connect",
    "connection refused",
    "connection reset",
    "timed out",
    "nosuchbucket",
    "nosuchkey",
    "access denied",
    "accessdenied",
    "no such file or directory",
    "unable to open",
)
"""Words of a DuckDB (or catalog database) error text that name a storage failure;
only checked on those errors, never on any exception (a bug's message may say "not
found" too)."""


def library_error_types() -> tuple[type[Exception], ...]:
    """The library error classes a storage failure arrives as (DuckDB, the operating
    system and pyarrow, SQLAlchemy, botocore): what the API answers where the answer is
    made (a 503, or the 500 of a bug), rather than as a crash of the application."""
    kinds: list[type[Exception]] = [duckdb.Error, OSError, sa_exc.SQLAlchemyError]
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - without the S3 libraries
        pass
    else:
        kinds += [BotoCoreError, ClientError]
    return tuple(kinds)


def is_storage_failure(exc: BaseException) -> bool:
    """True when ``exc`` is a failure of the storage (file system, object store,
    catalog database), not of the code or the input."""
    if isinstance(exc, StorageError):
        return True
    if isinstance(exc, IndexBuilderError):
        return False
    if isinstance(exc, OSError):  # pyarrow's IO errors are OSErrors too
        return True
    if isinstance(exc, _DUCKDB_STORAGE_CLASSES):
        return True
    if isinstance(exc, duckdb.Error):
        return _names_storage(str(exc))
    if isinstance(
        exc,
        sa_exc.OperationalError
        | sa_exc.InterfaceError
        | sa_exc.DisconnectionError
        | sa_exc.TimeoutError,
    ):
        return True
    if type(exc) is sa_exc.DatabaseError:  # not its subclasses (integrity, programming)
        return _names_storage(str(exc)) or "not a database" in str(exc).lower()
    module = type(exc).__module__
    return module.split(".", 1)[0] in _REMOTE_MODULES or module.startswith(_REMOTE_MODULES)


def _names_storage(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in _STORAGE_TEXT)


def storage_failure(exc: BaseException) -> StorageError | None:
    """``exc`` as a :class:`StorageError` when it is a failure of the storage (itself
    when it is one already); None for any other error."""
    if isinstance(exc, StorageError):
        return exc
    if not is_storage_failure(exc):
        return None
    return StorageError(f"storage unavailable: {brief(exc)}")


def brief(exc: BaseException) -> str:
    """The error's class and the most telling line of its text (a wrapped traceback's
    last error line), at most 300 characters."""
    text = str(exc).strip().splitlines()
    first = next((line for line in reversed(text) if "Error" in line), text[0] if text else "")
    name = type(exc).__name__
    return f"{name}: {first.strip()}"[:300] if first else name
