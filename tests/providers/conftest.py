"""Provider tests: circuit breakers registered by a test are removed after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from index_builder.ops.breakers import BREAKERS


@pytest.fixture(autouse=True)
def _isolated_breakers() -> Iterator[None]:
    before = dict(BREAKERS)
    yield
    BREAKERS.clear()
    BREAKERS.update(before)
