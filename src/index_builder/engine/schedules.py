"""Rebalance schedules: which trading days reconstitute and reweight the index.

A weekly (ISO week), monthly or quarterly rebalance happens on the last trading
day of the period: a trading day whose next *exchange session* falls in a later
period. So the last day of the data is not a month-end unless the calendar says
the month is over (METHODOLOGY "Index definition").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from index_builder.calendar import SessionCalendar
from index_builder.engine.registry import Registry

Days = NDArray[np.datetime64]
BoolArray = NDArray[np.bool_]


class RebalanceSchedule(Protocol):
    """Marks the rebalance days among ``days`` (sorted trading days)."""

    def mask(self, days: Days, calendar: SessionCalendar) -> BoolArray:
        """True where the day is a scheduled rebalance."""
        ...


SCHEDULES: Registry[RebalanceSchedule] = Registry("rebalance schedule")


@SCHEDULES.register("daily")
class Daily:
    """Every trading day."""

    def mask(self, days: Days, calendar: SessionCalendar) -> BoolArray:
        return np.ones(len(days), dtype=bool)


class _PeriodEnd(ABC):
    """Last trading day of a calendar period, judged by the next exchange session."""

    @abstractmethod
    def period(self, days: Days) -> NDArray[np.int64]:
        """An integer that is equal for days of the same period."""

    def mask(self, days: Days, calendar: SessionCalendar) -> BoolArray:
        days = days.astype("datetime64[D]")
        nxt = calendar.next_sessions(days)
        known = ~np.isnat(nxt)
        out = np.zeros(len(days), dtype=bool)
        out[known] = self.period(nxt[known]) != self.period(days[known])
        return out


@SCHEDULES.register("weekly")
class Weekly(_PeriodEnd):
    """Last trading day of each ISO week (weeks start on Monday)."""

    def period(self, days: Days) -> NDArray[np.int64]:
        # 1970-01-01 was a Thursday: shifting by 3 days makes weeks start on Monday.
        return (days.astype("datetime64[D]").astype(np.int64) + 3) // 7


@SCHEDULES.register("monthly")
class Monthly(_PeriodEnd):
    """Last trading day of each calendar month."""

    def period(self, days: Days) -> NDArray[np.int64]:
        return days.astype("datetime64[M]").astype(np.int64)


@SCHEDULES.register("quarterly")
class Quarterly(_PeriodEnd):
    """Last trading day of each calendar quarter."""

    def period(self, days: Days) -> NDArray[np.int64]:
        return days.astype("datetime64[M]").astype(np.int64) // 3
