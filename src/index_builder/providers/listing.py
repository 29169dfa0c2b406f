"""What every provider can give, its limit and auth, and whether it is configured
(``index-builder providers`` and ``GET /providers``)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from index_builder.providers import HTTP_PROVIDERS, PROVIDERS
from index_builder.settings import Settings

CAPABILITY_FIELDS = (
    "prices",
    "adjusted_prices",
    "splits",
    "dividends",
    "shares_outstanding_history",
    "listings",
)


def describe_providers(settings: Settings) -> list[dict[str, Any]]:
    """One entry per provider, sorted by name; never includes a key."""
    out: list[dict[str, Any]] = []
    for name, kind in sorted(PROVIDERS.items()):
        caps = asdict(kind.capabilities)
        http = HTTP_PROVIDERS.get(name)
        key_setting = http.api_key_setting if http else None
        rate = getattr(settings, http.rate_limit_setting) if http else None
        out.append(
            {
                "name": name,
                "capabilities": {f: bool(caps[f]) for f in CAPABILITY_FIELDS},
                "rate_limit_per_minute": rate,
                "auth": caps["auth"],
                "needs_api_key": bool(caps["needs_api_key"]),
                "network": bool(caps["network"]),
                "configured": key_setting is None or getattr(settings, key_setting) is not None,
                "api_key_variable": None
                if key_setting is None
                else f"INDEX_BUILDER_{key_setting.upper()}",
            }
        )
    return out
