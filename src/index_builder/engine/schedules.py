"""Rebalance schedules: which trading days reconstitute and reweight the index.

A weekly (ISO week), monthly or quarterly rebalance happens at the close of the
period's last exchange session: a session whose next exchange session falls in
a later period (so the last day of the data is not a month end unless the
calendar says the month is over). When that session is missing from the data
(no valid row of any security), the rebalance is postponed to the next trading
day in the data, as an index provider postpones one on an unscheduled closure;
it is never moved back to an earlier, already published day
(METHODOLOGY "Index definition").

So trading day t is a scheduled rebalance when some period-end session e has
t_prev < e <= t, t_prev being the trading day before t in the data: a rule that
depends only on t and the day before it, so a build that continues from stored
results schedules exactly what a full build does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import lru_cache
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
        """True where the day is a scheduled rebalance. The first day is judged
        alone (is it a period's last session?); callers force it when it is the
        base date or a resumed rebalance."""
        ...


SCHEDULES: Registry[RebalanceSchedule] = Registry("rebalance schedule")


@SCHEDULES.register("daily")
class Daily:
    """Every trading day."""

    def mask(self, days: Days, calendar: SessionCalendar) -> BoolArray:
        return np.ones(len(days), dtype=bool)


class _PeriodEnd(ABC):
    """The period's last exchange session, or the first trading day after it."""

    @abstractmethod
    def period(self, days: Days) -> NDArray[np.int64]:
        """An integer that is equal for days of the same period."""

    def period_ends(self, calendar: SessionCalendar) -> Days:
        """Every session of ``calendar`` whose next session is in a later period."""
        return _period_ends(self, calendar)

    def mask(self, days: Days, calendar: SessionCalendar) -> BoolArray:
        days = days.astype("datetime64[D]")
        ends = self.period_ends(calendar)
        # how many period ends fall on or before each day: a day is a rebalance when
        # a period end falls after the previous trading day and on or before it
        seen = np.searchsorted(ends, days, side="right")
        out = np.zeros(len(days), dtype=bool)
        if len(days):
            first = days[:1]
            out[0] = bool(np.isin(first, ends)[0])
            out[1:] = seen[1:] > seen[:-1]
        return out


@lru_cache(maxsize=16)
def _period_ends(schedule: _PeriodEnd, calendar: SessionCalendar) -> Days:
    sessions = calendar.sessions
    if len(sessions) < 2:
        return sessions[:0]
    later = schedule.period(sessions[1:]) != schedule.period(sessions[:-1])
    ends: Days = sessions[:-1][later]
    return ends


@SCHEDULES.register("weekly")
class Weekly(_PeriodEnd):
    """Last session of each ISO week (weeks start on Monday)."""

    def period(self, days: Days) -> NDArray[np.int64]:
        # 1970-01-01 was a Thursday: shifting by 3 days makes weeks start on Monday.
        return (days.astype("datetime64[D]").astype(np.int64) + 3) // 7


@SCHEDULES.register("monthly")
class Monthly(_PeriodEnd):
    """Last session of each calendar month."""

    def period(self, days: Days) -> NDArray[np.int64]:
        return days.astype("datetime64[M]").astype(np.int64)


@SCHEDULES.register("quarterly")
class Quarterly(_PeriodEnd):
    """Last session of each calendar quarter."""

    def period(self, days: Days) -> NDArray[np.int64]:
        return days.astype("datetime64[M]").astype(np.int64) // 3
