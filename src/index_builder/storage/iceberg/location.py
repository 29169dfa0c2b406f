"""Where a lake lives: its SQL catalog, its warehouse, and how to reach object storage.

A warehouse is a local folder, ``s3://bucket/prefix`` or ``gs://bucket/prefix``.
pyiceberg writes and reads the tables through its Arrow file IO, configured here
from the standard AWS settings (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION``, and the endpoint: ``INDEX_BUILDER_S3_ENDPOINT``,
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, which pyiceberg does not read by
itself); DuckDB reads the bar tables' Parquet files through an fsspec file system
(s3fs, gcsfs) registered on its connection. Credentials are never logged or shown:
:meth:`LakeLocation.describe` names the catalog without its password.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyarrow.fs import AwsStandardS3RetryStrategy
from sqlalchemy.engine import make_url

from index_builder.errors import InvalidInputError

OBJECT_STORE_SCHEMES = ("s3", "gs")

REQUEST_ATTEMPTS = 2
"""Attempts per object-store request (pyarrow's and botocore's retries): with
``s3_timeout_seconds`` each, an unreachable store is noticed after about twice the
timeout (a read answers 503, readiness fails), not after minutes of retries."""


class ObjectStoreRetries(AwsStandardS3RetryStrategy):  # type: ignore[misc]
    """pyarrow's standard retry strategy with :data:`REQUEST_ATTEMPTS` attempts (pyiceberg
    builds it by name, without arguments: ``s3.retry-strategy-impl``)."""

    def __init__(self) -> None:
        super().__init__(max_attempts=REQUEST_ATTEMPTS)


@dataclass(frozen=True)
class ObjectStoreOptions:
    """How to reach an object store (from the environment; never printed)."""

    endpoint: str | None = None
    region: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    timeout_seconds: float = 10.0

    @classmethod
    def from_environment(
        cls, endpoint: str | None = None, timeout_seconds: float = 10.0
    ) -> ObjectStoreOptions:
        """The AWS settings of the environment (``endpoint`` wins over AWS_ENDPOINT_URL*)."""
        env = os.environ
        return cls(
            endpoint=endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
            access_key=env.get("AWS_ACCESS_KEY_ID"),
            secret_key=env.get("AWS_SECRET_ACCESS_KEY"),
            session_token=env.get("AWS_SESSION_TOKEN"),
            timeout_seconds=timeout_seconds,
        )


@dataclass(frozen=True)
class LakeLocation:
    """The catalog and warehouse of one lake store."""

    catalog_uri: str
    warehouse: str
    """A local folder (absolute) or an object-store URL without a trailing slash."""
    namespace: str = "index_builder"
    options: ObjectStoreOptions = field(default_factory=ObjectStoreOptions)

    @classmethod
    def resolve(
        cls,
        warehouse: str,
        catalog_uri: str | None,
        *,
        namespace: str = "index_builder",
        options: ObjectStoreOptions | None = None,
        local_folder: Path | None = None,
    ) -> LakeLocation:
        """A location from the settings: a relative local warehouse is made absolute; the
        default catalog is ``catalog.db`` (SQLite) in a local warehouse, or in
        ``local_folder`` for an object-store warehouse."""
        text = warehouse.strip()
        if not text:
            raise InvalidInputError("warehouse: empty", field="warehouse")
        scheme = text.split("://", 1)[0].lower() if "://" in text else "file"
        if scheme == "file":
            folder = Path(text.removeprefix("file://")).expanduser().resolve()
            text = str(folder)
        elif scheme in OBJECT_STORE_SCHEMES:
            bucket = text.split("://", 1)[1].split("/", 1)[0]
            if not bucket:
                raise InvalidInputError(f"warehouse: no bucket in {warehouse!r}", field="warehouse")
            text = text.rstrip("/")
        else:
            raise InvalidInputError(
                f"warehouse: {warehouse!r} is not a folder, s3:// or gs:// location",
                field="warehouse",
            )
        if catalog_uri is None:
            base = Path(text) if scheme == "file" else (local_folder or Path("data"))
            catalog_uri = f"sqlite:///{base.expanduser().resolve() / 'catalog.db'}"
        _check_catalog_uri(catalog_uri)
        return cls(catalog_uri, text, namespace, options or ObjectStoreOptions())

    @property
    def scheme(self) -> str:
        """``file``, ``s3`` or ``gs``."""
        return self.warehouse.split("://", 1)[0] if "://" in self.warehouse else "file"

    @property
    def local(self) -> bool:
        return self.scheme == "file"

    @property
    def sqlite_file(self) -> Path | None:
        """The catalog's SQLite file, when the catalog is one."""
        url = make_url(self.catalog_uri)
        if url.get_backend_name() != "sqlite" or not url.database:
            return None
        return Path(url.database)

    def warehouse_url(self) -> str:
        """The warehouse as pyiceberg wants it (``file:///...`` for a folder)."""
        return Path(self.warehouse).as_uri() if self.local else self.warehouse

    def describe(self) -> dict[str, str]:
        """What status, health and build output show: never a password."""
        return {
            "backend": "iceberg",
            "catalog": make_url(self.catalog_uri).render_as_string(hide_password=True),
            "warehouse": self.warehouse,
            "namespace": self.namespace,
        }

    def catalog_properties(self) -> dict[str, str]:
        """pyiceberg SqlCatalog properties (file IO included)."""
        props = {"uri": self.catalog_uri, "warehouse": self.warehouse_url()}
        o = self.options
        if self.scheme == "s3":
            props["s3.connect-timeout"] = str(o.timeout_seconds)
            props["s3.request-timeout"] = str(o.timeout_seconds)
            props["s3.region"] = o.region or "us-east-1"
            props["s3.retry-strategy-impl"] = f"{__name__}.{ObjectStoreRetries.__name__}"
            if o.endpoint:
                props["s3.endpoint"] = o.endpoint
                props["s3.force-virtual-addressing"] = "false"
            if o.access_key and o.secret_key:
                props["s3.access-key-id"] = o.access_key
                props["s3.secret-access-key"] = o.secret_key
            if o.session_token:
                props["s3.session-token"] = o.session_token
        return props

    def file_system(self) -> Any:
        """An fsspec file system for DuckDB to read the warehouse's files (object
        stores; None for a local folder, which DuckDB reads itself). For S3, the
        details of a data file are kept a moment (:mod:`.lakefs`): DuckDB asks for
        them many times per query."""
        if self.scheme == "s3":
            from index_builder.storage.iceberg.lakefs import LakeS3FileSystem

            return s3_file_system(self.options, LakeS3FileSystem)
        if self.scheme == "gs":
            try:
                import gcsfs
            except ImportError:
                raise InvalidInputError(
                    "warehouse: gs:// needs the gcsfs package (pip install gcsfs)",
                    field="warehouse",
                ) from None
            return gcsfs.GCSFileSystem()
        return None

    def data_path(self, file_path: str) -> str:
        """A data file's location as DuckDB opens it: a plain path for a local file
        (pyiceberg's ``file://`` URIs keep partition values percent-encoded in the
        folder names themselves, so nothing is decoded)."""
        return file_path.removeprefix("file://") if file_path.startswith("file://") else file_path


def s3_file_system(options: ObjectStoreOptions, kind: type | None = None) -> Any:
    """An s3fs file system (of class ``kind``, default ``s3fs.S3FileSystem``) on the
    store of ``options``: its endpoint, region and credentials, each request bounded
    by ``timeout_seconds`` and :data:`REQUEST_ATTEMPTS` attempts (the lake's data
    files, backups)."""
    import s3fs

    fs = (kind or s3fs.S3FileSystem)(
        key=options.access_key,
        secret=options.secret_key,
        token=options.session_token,
        endpoint_url=options.endpoint,
        client_kwargs={"region_name": options.region or "us-east-1"},
        config_kwargs={
            "connect_timeout": options.timeout_seconds,
            "read_timeout": options.timeout_seconds,
            "retries": {"total_max_attempts": REQUEST_ATTEMPTS, "mode": "standard"},
        },
        skip_instance_cache=True,
    )
    # s3fs retries a timed-out request on its own too (5 times by default, each with
    # botocore's attempts): once is enough, botocore retried already
    fs.retries = 1
    return fs


def _check_catalog_uri(uri: str) -> None:
    try:
        url = make_url(uri)
    except Exception:  # SQLAlchemy raises ArgumentError (and others) for bad text
        raise InvalidInputError(
            "catalog_uri: not a SQLAlchemy database URL (e.g. sqlite:////path/catalog.db or "
            "postgresql+psycopg2://user@host/db)",
            field="catalog_uri",
        ) from None
    if url.get_backend_name() not in ("sqlite", "postgresql", "mysql"):
        raise InvalidInputError(
            f"catalog_uri: {url.get_backend_name()} is not a supported catalog database "
            "(sqlite or postgresql)",
            field="catalog_uri",
        )
