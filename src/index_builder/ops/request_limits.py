"""Request limits: body size, window length, page size and a time limit on reads.

* ``INDEX_BUILDER_MAX_BODY_BYTES``: a larger ``Content-Length`` is answered
  ``413`` before the body is read; a body without one (chunked) is counted
  while it streams and refused with ``413`` once it passes the limit.
* ``INDEX_BUILDER_MAX_WINDOW_DAYS``: a window that names its ``start_date``
  spans at most this many calendar days (to ``end_date``, or to today without
  one); ``422`` with the field. The default window (from the base date) is
  bounded by the data and not limited.
* ``INDEX_BUILDER_MAX_PAGE_SIZE``: the default and largest ``limit`` of
  GET /index-composition; larger is ``422`` (field ``limit``).
* ``INDEX_BUILDER_REQUEST_TIMEOUT_SECONDS``: a GET whose response has not
  started within this time is answered ``504`` problem+json (code
  ``timeout``). The work is not abandoned (a database query in a worker thread
  cannot be interrupted): it finishes after the 504 and a cached read stores
  its answer, so a retry is fast. Builds and exports (POST) are not
  limited; large builds answer ``202`` with a job anyway.

The body limit and the timeout are enforced by the request layer,
:class:`~index_builder.ops.middleware.RequestMiddleware`; the window and page
checks below are called by the routes.
"""

from __future__ import annotations

import datetime as dt

from index_builder.errors import InvalidInputError


def check_window(start: dt.date | None, end: dt.date | None, max_days: int) -> None:
    """Refuse a window longer than ``max_days`` calendar days (when it names its start)."""
    if start is None:
        return
    last = end if end is not None else dt.datetime.now(dt.UTC).date()
    days = (last - start).days + 1
    if days > max_days:
        raise InvalidInputError(
            f"the window {start} to {last} spans {days} calendar days; at most {max_days} "
            "are allowed (INDEX_BUILDER_MAX_WINDOW_DAYS): ask for it in parts",
            field="end_date" if end is not None else "start_date",
        )


def page_limit(limit: int | None, max_page_size: int) -> int:
    """The page size to use: ``limit``, or the largest when not given (422 above it)."""
    if limit is None:
        return max_page_size
    if limit > max_page_size:
        raise InvalidInputError(
            f"limit {limit} is above the largest page size, {max_page_size} "
            "(INDEX_BUILDER_MAX_PAGE_SIZE): page with offset",
            field="limit",
        )
    return limit
