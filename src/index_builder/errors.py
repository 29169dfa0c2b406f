"""One error model shared by the CLI and (later) the API.

Every error a user can cause is an :class:`IndexBuilderError` subclass with a
one-line message, an optional offending ``field`` and a stable ``code``. The CLI
prints the message and exits with :attr:`exit_code`; the API maps the same
classes to RFC 9457 problem details.
"""

from __future__ import annotations


class IndexBuilderError(Exception):
    """Base class for errors that are the user's to fix (bad input, missing data)."""

    code = "error"
    exit_code = 2
    http_status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class InvalidInputError(IndexBuilderError):
    """A parameter, file or definition is malformed."""

    code = "invalid-input"
    http_status = 422


class ConflictingOptionsError(InvalidInputError):
    """Inputs that exclude each other were given together (``as_of`` and
    ``as_of_version``): the request is malformed (400; CLI exit code 2)."""

    code = "conflicting-options"
    http_status = 400


class NotFoundError(IndexBuilderError):
    """An index, run or date range that does not exist."""

    code = "not-found"
    http_status = 404


class NoDataError(NotFoundError):
    """The requested window has no built or ingested data."""

    code = "no-data"


class ConflictError(IndexBuilderError):
    """The request conflicts with the current state (e.g. deleting a built-in index)."""

    code = "conflict"
    http_status = 409


class UnusableInputError(IndexBuilderError):
    """An ingestion input that cannot be read at all (missing file or column)."""

    code = "unusable-input"
    http_status = 422


class BuildError(IndexBuilderError):
    """The engine cannot compute an index from the data (e.g. nothing eligible at base)."""

    code = "build-failed"
    http_status = 422


class StorageError(IndexBuilderError):
    """The database cannot be opened, read or written (no space, read-only, permission,
    the file removed): not the user's input; the API answers 503 with Retry-After."""

    code = "storage-unavailable"
    exit_code = 1
    http_status = 503


class StorageBusyError(StorageError):
    """Another process is writing the lake (its writer lease), or took over while this
    process wrote: nothing of this write is visible; try again (503 with Retry-After)."""

    code = "storage-busy"


class ProviderError(IndexBuilderError):
    """A market data provider could not deliver (HTTP failure, bad payload, open circuit).

    ``reason`` is a stable code (``server_error``, ``rate_limited``, ``timeout``,
    ``connection_error``, ``client_error``, ``unauthorized``, ``unknown_symbol``,
    ``malformed_payload``, ``html_payload``, ``empty_series``, ``circuit_open``);
    ``transient`` errors are retried; ``snippet`` is the start of the raw payload
    (quarantine evidence, never an API key).
    """

    code = "provider-error"
    exit_code = 1
    http_status = 502

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        reason: str,
        symbol: str | None = None,
        transient: bool = False,
        retry_after: float | None = None,
        snippet: str | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.reason = reason
        self.symbol = symbol
        self.transient = transient
        self.retry_after = retry_after
        self.snippet = snippet

    @property
    def trips_breaker(self) -> bool:
        """Whether the failure says the provider is unwell (not just this symbol)."""
        return self.transient or self.reason in {"html_payload", "unauthorized"}
