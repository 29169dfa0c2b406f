"""The S3 file system DuckDB reads a lake's data files through.

DuckDB asks an fsspec file system for a file's details many times per query and per
file (``glob``, ``exists``, ``size``, ``modified``, ``open``: eight ``info`` calls
for one scan of one file), and s3fs answers each with a HEAD request. A lake's data
files are written once under unique names and never changed, so their details are
kept for :data:`INFO_SECONDS`: one HEAD per file and second instead of dozens.
Absence and errors are never kept, and a read after the interval asks the object store
again, so an unreachable store still fails the next read that touches it (503
``storage-unavailable``), as before.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import s3fs

INFO_SECONDS = 1.0
"""How long a data file's details (size, modification time) are reused."""

_KEPT_FILES = 10_000
"""Above this many kept details, the expired ones are dropped (bounded memory)."""


class LakeS3FileSystem(s3fs.S3FileSystem):  # type: ignore[misc]
    """s3fs with the details of existing files kept for :data:`INFO_SECONDS`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lake_info: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lake_info_lock = threading.Lock()

    async def _info(
        self,
        path: str,
        bucket: str | None = None,
        key: str | None = None,
        refresh: bool = False,
        version_id: str | None = None,
    ) -> dict[str, Any]:
        name = self._strip_protocol(path)
        keep = not refresh and version_id is None and "?" not in name
        if keep:
            with self._lake_info_lock:
                known = self._lake_info.get(name)
            if known is not None and time.monotonic() - known[0] < INFO_SECONDS:
                return dict(known[1])
        info: dict[str, Any] = await super()._info(
            path, bucket, key, refresh=refresh, version_id=version_id
        )
        if keep and info.get("type") == "file":
            now = time.monotonic()
            with self._lake_info_lock:
                if len(self._lake_info) >= _KEPT_FILES:
                    self._lake_info = {
                        k: v for k, v in self._lake_info.items() if now - v[0] < INFO_SECONDS
                    }
                self._lake_info[name] = (now, dict(info))
        return info
