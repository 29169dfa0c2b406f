"""A tiny name -> strategy registry shared by selection, weighting and schedules."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a definition's keyword (e.g. ``"equal"``) to the strategy that implements it.

    Adding a strategy is one new class decorated with ``@REGISTRY.register("name")``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: instantiate the class once and store it under ``name``."""

        def decorate(cls: type[T]) -> type[T]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = cls()
            return cls

        return decorate

    def get(self, name: str) -> T:
        """The strategy registered as ``name``."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise KeyError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
