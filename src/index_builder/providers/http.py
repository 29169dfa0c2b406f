"""The base of the HTTP providers: one httpx client per provider, resilient calls.

A provider fetches one symbol at a time, OpenBB style: ``transform_query``
(the symbol and window -> its request), ``extract`` (the raw JSON, through
:meth:`HttpProvider.get_json`) and ``transform`` (raw -> a standard
:class:`SymbolData`). Every request goes through the rate limiter, the retry
policy (tenacity, :mod:`~index_builder.providers.resilience`: every retry logged and
counted) and the provider's circuit breaker; payloads that are not the JSON the
provider documents (an HTML challenge page with status 200, missing fields,
wrong types, an empty series) raise :class:`~index_builder.errors.ProviderError`
with a reason, so they are quarantined and never stored as data.

API keys come from the settings (``SecretStr``) and are sent as headers, never
in a URL, a log line or an error message; a server that echoes the request
headers in its body gets the key masked (``***``) in the quarantine snippet.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import pyarrow as pa

from index_builder.errors import ProviderError
from index_builder.ops.breakers import BREAKERS, CircuitBreaker, register_breaker
from index_builder.providers.base import ProviderCapabilities
from index_builder.providers.resilience import Clock, RateLimiter, RetryPolicy, Sleep
from index_builder.providers.schema import PRICES_SCHEMA, SECURITIES_SCHEMA, MarketData

if TYPE_CHECKING:  # settings import the engine, which imports the provider schema
    from index_builder.settings import Settings

SNIPPET_CHARS = 300
"""How much of a rejected payload is kept as quarantine evidence."""


def utc_now() -> dt.datetime:
    """Now, UTC (time-zone aware)."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class SymbolQuery:
    """One symbol's daily bars over [start, end] (inclusive)."""

    symbol: str
    start: dt.date
    end: dt.date


@dataclass
class SymbolData:
    """A provider's answer for one symbol: its bars (standard columns) and security row."""

    symbol: str
    rows: list[dict[str, Any]]
    security: dict[str, Any] = field(default_factory=dict)

    def dates(self) -> set[dt.date]:
        """The dates of the bars."""
        return {row["date"] for row in self.rows}


def payload_error(
    provider: str, reason: str, message: str, *, symbol: str | None, raw: Any = None
) -> ProviderError:
    """A rejected payload (``malformed_payload``, ``empty_series``, ...) with a snippet."""
    snippet = None if raw is None else str(raw)[:SNIPPET_CHARS]
    return ProviderError(
        f"{provider}: {message}", provider=provider, reason=reason, symbol=symbol, snippet=snippet
    )


class HttpProvider(ABC):
    """Shared machinery of the HTTP providers (subclasses set the class attributes)."""

    name: str
    base_url: ClassVar[str]
    capabilities: ProviderCapabilities
    api_key_setting: ClassVar[str | None] = None
    rate_limit_setting: ClassVar[str]

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Sleep = time.sleep,
        clock: Clock = time.monotonic,
        now: Callable[[], dt.datetime] = utc_now,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        from index_builder.settings import get_settings

        self.settings = settings or get_settings()
        s = self.settings
        self.now = now
        self.client = httpx.Client(
            base_url=self.base_url,
            transport=transport,
            timeout=s.provider_timeout_seconds,
            headers=self.auth_headers(),
        )
        self.retry = RetryPolicy(
            retries=s.provider_retries,
            base=s.provider_backoff_base_seconds,
            maximum=s.provider_backoff_max_seconds,
            sleep=sleep,
            redact=self.redact,
        )
        self.limiter = RateLimiter(
            float(getattr(s, self.rate_limit_setting)), clock=clock, sleep=sleep
        )
        registered = BREAKERS.get(self.name)
        if breaker is None and isinstance(registered, CircuitBreaker):
            breaker = registered  # one breaker per provider and process
        self.breaker: CircuitBreaker = register_breaker(
            breaker
            or CircuitBreaker(
                self.name,
                threshold=s.breaker_failure_threshold,
                ratio=s.breaker_failure_ratio,
                window=s.breaker_window,
                cooldown=s.breaker_cooldown_seconds,
            )
        )

    # ------------------------------------------------------------------ auth
    def api_key(self) -> str | None:
        """The API key from the settings (None when not configured or not needed)."""
        if self.api_key_setting is None:
            return None
        secret = getattr(self.settings, self.api_key_setting)
        return None if secret is None else str(secret.get_secret_value())

    def configured(self) -> bool:
        """Whether the provider can be used (its key is set when it needs one)."""
        return self.api_key_setting is None or self.api_key() is not None

    auth_scheme: ClassVar[str | None] = None
    """``Authorization: <scheme> <key>`` when set and the key is configured."""

    def auth_headers(self) -> dict[str, str]:
        """Headers carrying the credentials (none without a scheme or a key)."""
        key = self.api_key() if self.auth_scheme else None
        return {"Authorization": f"{self.auth_scheme} {key}"} if key else {}

    def redact(self, text: str) -> str:
        """``text`` without the API key (a server may echo the request headers)."""
        key = self.api_key()
        return text.replace(key, "***") if key else text

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()

    # ------------------------------------------------------------------ fetching
    @abstractmethod
    def transform_query(self, query: SymbolQuery) -> dict[str, Any]:
        """The provider's request parameters for one symbol."""

    @abstractmethod
    def extract(self, params: dict[str, Any], query: SymbolQuery) -> Any:
        """The raw payload(s) for one symbol."""

    @abstractmethod
    def transform(self, raw: Any, query: SymbolQuery) -> SymbolData:
        """The standard rows from the raw payload(s); raises on a malformed payload."""

    def fetch_symbol(self, symbol: str, start: dt.date, end: dt.date) -> SymbolData:
        """One symbol's daily bars over [start, end], or a :class:`ProviderError`."""
        if not self.configured():
            setting = f"INDEX_BUILDER_{(self.api_key_setting or '').upper()}"
            raise ProviderError(
                f"{self.name}: no API key (set {setting})",
                provider=self.name,
                reason="unauthorized",
                symbol=symbol,
            )
        query = SymbolQuery(symbol.upper(), start, end)
        try:
            return self.transform(self.extract(self.transform_query(query), query), query)
        except ProviderError as exc:
            if exc.snippet is not None:  # quarantine evidence: never the key
                exc.snippet = self.redact(exc.snippet)
            raise

    def fetch(self, **query: Any) -> MarketData:
        """``symbols`` (list), ``start``, ``end``: every symbol through a chain of one."""
        from index_builder.providers.chain import ProviderChain

        start, end = query["start"], query["end"]
        result = ProviderChain([self]).fetch(
            {s.upper(): (start, end) for s in query["symbols"]}, sessions=None
        )
        return result.market_data()

    # ------------------------------------------------------------------ HTTP
    def get_json(
        self, path: str, params: dict[str, Any] | None = None, *, symbol: str | None = None
    ) -> Any:
        """GET ``path`` as JSON through the breaker, the retries and the rate limiter."""
        if not self.breaker.allow():
            raise ProviderError(
                f"{self.name}: circuit open (retry in {self.breaker.retry_in():.0f} s)",
                provider=self.name,
                reason="circuit_open",
                symbol=symbol,
            )
        try:
            payload = self.retry.call(lambda: self._get_once(path, params, symbol))
        except ProviderError as exc:
            if exc.trips_breaker:
                self.breaker.record_failure()
            else:
                self.breaker.record_success()  # the provider answered; the symbol is the problem
            raise
        self.breaker.record_success()
        return payload

    def paginate(
        self, path: str, params: dict[str, Any], *, symbol: str | None = None, max_pages: int = 100
    ) -> Iterator[dict[str, Any]]:
        """Every ``results`` item of a paginated endpoint that links pages by ``next_url``."""
        url: str | None = path
        page_params: dict[str, Any] | None = params
        for _ in range(max_pages):
            if url is None:
                return
            page = self.get_json(url, page_params, symbol=symbol)
            if not isinstance(page, dict):
                raise payload_error(
                    self.name, "malformed_payload", "page is not an object", symbol=symbol, raw=page
                )
            results = page.get("results", [])
            if not isinstance(results, list):
                raise payload_error(
                    self.name, "malformed_payload", "results is not a list", symbol=symbol, raw=page
                )
            yield from results
            url, page_params = page.get("next_url"), None

    def _get_once(self, path: str, params: dict[str, Any] | None, symbol: str | None) -> Any:
        self.limiter.acquire()
        try:
            response = self.client.get(path, params=params)
        except httpx.TimeoutException as exc:
            raise self._error(
                "timeout", f"timed out ({type(exc).__name__})", symbol, True
            ) from None
        except httpx.TransportError as exc:
            raise self._error(
                "connection_error", f"connection failed ({type(exc).__name__})", symbol, True
            ) from None
        return self._decode(response, symbol)

    def _decode(self, response: httpx.Response, symbol: str | None) -> Any:
        status = response.status_code
        if status == 429:
            error = self._error("rate_limited", "429 Too Many Requests", symbol, True)
            error.retry_after = parse_retry_after(response.headers.get("Retry-After"), self.now())
            raise error
        if status >= 500:
            raise self._error("server_error", f"HTTP {status}", symbol, True)
        if status in (401, 403):
            raise self._error("unauthorized", f"HTTP {status} (check the API key)", symbol, False)
        if status == 404:
            raise self._error("unknown_symbol", "HTTP 404", symbol, False, response.text)
        if status >= 400:
            raise self._error("client_error", f"HTTP {status}", symbol, False, response.text)
        text = response.text
        content_type = response.headers.get("content-type", "")
        if "html" in content_type or text.lstrip()[:1] == "<":
            raise self._error("html_payload", "HTML instead of JSON", symbol, False, text)
        try:
            return response.json()
        except ValueError:
            raise self._error("malformed_payload", "invalid JSON", symbol, False, text) from None

    def _error(
        self, reason: str, message: str, symbol: str | None, transient: bool, raw: str | None = None
    ) -> ProviderError:
        return ProviderError(
            f"{self.name}: {message}" + (f" for {symbol}" if symbol else ""),
            provider=self.name,
            reason=reason,
            symbol=symbol,
            transient=transient,
            snippet=None if raw is None else self.redact(raw)[:SNIPPET_CHARS],
        )


def parse_retry_after(value: str | None, now: dt.datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return max(0.0, (moment - now).total_seconds())


def prices_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Standard rows -> a :data:`PRICES_SCHEMA` table (absent columns are nulls)."""
    return pa.Table.from_pylist(
        [{name: row.get(name) for name in PRICES_SCHEMA.names} for row in rows],
        schema=PRICES_SCHEMA,
    )


def securities_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Security rows -> a :data:`SECURITIES_SCHEMA` table."""
    return pa.Table.from_pylist(
        [{name: row.get(name) for name in SECURITIES_SCHEMA.names} for row in rows],
        schema=SECURITIES_SCHEMA,
    )


def number(value: Any, what: str, provider: str, symbol: str, raw: Any) -> float:
    """``value`` as a float, or a ``malformed_payload`` error naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise payload_error(
            provider, "malformed_payload", f"{what} is not a number", symbol=symbol, raw=raw
        )
    return float(value)


def number_field(obj: Any, key: str, provider: str, symbol: str, raw: Any) -> float:
    """``obj[key]`` as a float: :func:`field_of` then :func:`number`."""
    return number(field_of(obj, key, provider, symbol, raw), key, provider, symbol, raw)


def field_of(obj: Any, key: str, provider: str, symbol: str, raw: Any) -> Any:
    """``obj[key]``, or a ``malformed_payload`` error naming the missing field."""
    if not isinstance(obj, dict) or key not in obj:
        raise payload_error(
            provider, "malformed_payload", f"missing field {key!r}", symbol=symbol, raw=raw
        )
    return obj[key]
