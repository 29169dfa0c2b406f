"""Point in time: when stored values became known, and builds as of a moment K.

Every stored price and security records ``known_at``, the moment it became
known (docs/methodology.md, section 9). A build *as of* K uses only the values
known at K and is stored under its own result key, so a past publication can be
reproduced exactly after corrections.

Inside the system every timestamp is a naive ``datetime`` in UTC at microsecond
precision (DuckDB ``TIMESTAMP``); :func:`to_utc` converts what users give.
"""

from __future__ import annotations

import datetime as dt

from index_builder.errors import ConflictingOptionsError, InvalidInputError

AS_OF_SEPARATOR = "@"
"""Separates an index id from its as-of moment in a result key (ids never contain it)."""

AS_OF_FORMATS = "YYYY-MM-DD, or YYYY-MM-DDTHH:MM[:SS[.ffffff]] with an optional Z or +HH:MM"
"""What an as-of value may look like (in error messages and help texts)."""


def utc_now() -> dt.datetime:
    """The current time, naive UTC."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def to_utc(value: dt.datetime) -> dt.datetime:
    """Naive UTC: an aware value is converted, a naive value is taken as UTC already."""
    if value.tzinfo is None:
        return value
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def end_of_day(day: dt.date) -> dt.datetime:
    """The last microsecond of ``day`` (UTC): "as of a date" sees everything known that day."""
    return dt.datetime.combine(day, dt.time.max)


def parse_as_of(text: str, field: str = "as_of", label: str | None = None) -> dt.datetime:
    """An as-of moment from ISO 8601 text, naive UTC.

    A date (``2024-06-28``) means the end of that day UTC; a date-time without
    an offset is UTC; one with an offset (``Z``, ``+02:00``) is converted.
    ``label`` names the input in the error message (default: ``field``).
    """
    value = text.strip()
    try:
        return end_of_day(dt.date.fromisoformat(value))
    except ValueError:
        pass
    try:
        return to_utc(dt.datetime.fromisoformat(value))
    except ValueError:
        raise InvalidInputError(
            f"{label or field}: {text!r} is not a date or timestamp (use {AS_OF_FORMATS})",
            field=field,
        ) from None


def check_as_of(
    value: dt.datetime | None, now: dt.datetime | None = None, field: str = "as_of"
) -> dt.datetime | None:
    """``value`` as naive UTC; a moment in the future is :class:`InvalidInputError`.

    What is known at a future moment is not known yet: a build as of it could
    change after the next ingestion, so it would reproduce nothing.
    """
    if value is None:
        return None
    moment = to_utc(value)
    current = now or utc_now()
    if moment > current:
        raise InvalidInputError(
            f"{field} {format_as_of(moment)} is in the future (now: {format_as_of(current)}); "
            "what is known then is not known yet",
            field=field,
        )
    return moment


def format_as_of(value: dt.datetime) -> str:
    """ISO 8601 with a ``Z``: ``2024-06-28T23:59:59.999999Z``, ``2024-02-01T12:00:00Z``."""
    return to_utc(value).isoformat() + "Z"


def check_point(
    as_of: dt.datetime | None,
    as_of_version: int | None,
    labels: tuple[str, str] = ("as_of", "as_of_version"),
) -> None:
    """A build or read is as of a moment or as of a version, never both
    (:class:`ConflictingOptionsError` naming both ``labels``)."""
    if as_of is not None and as_of_version is not None:
        raise ConflictingOptionsError(
            f"{labels[0]} and {labels[1]} cannot be given together: build or read as of a "
            "moment or as of a version, not both",
            field=labels[1].lstrip("-").replace("-", "_"),
        )


def result_key(index_id: str, as_of: dt.datetime | None, as_of_version: int | None = None) -> str:
    """Where a build's results are stored: the index id, ``<id>@<as_of>`` as of K, or
    ``<id>@v<V>`` as of version V (the data as they stood after it)."""
    check_point(as_of, as_of_version)
    if as_of_version is not None:
        return f"{index_id}{AS_OF_SEPARATOR}v{as_of_version}"
    if as_of is None:
        return index_id
    return f"{index_id}{AS_OF_SEPARATOR}{format_as_of(as_of)}"


def as_of_prefix(index_id: str) -> str:
    """The common prefix of every as-of result key of ``index_id``."""
    return f"{index_id}{AS_OF_SEPARATOR}"


def build_command(
    index_id: str, as_of: dt.datetime | None, as_of_version: int | None = None
) -> str:
    """The CLI command that builds ``index_id`` (as of ``as_of`` or ``as_of_version``)."""
    command = f"index-builder build --index {index_id}"
    if as_of_version is not None:
        return f"{command} --as-of-version {as_of_version}"
    return command if as_of is None else f"{command} --as-of {format_as_of(as_of)}"
