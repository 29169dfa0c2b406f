"""The scheduler loop: one daily cycle after every XNYS session close + offset.

Clock and sleep are injectable, so tests drive it with a fake clock across
holidays, early closes and missed days. The first pass runs a cycle at once
(catching up whatever closed while the scheduler was down); then it sleeps until
the next session's close + offset, which skips weekends and holidays and
follows early closes.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

from index_builder.calendar import SessionCalendar
from index_builder.schedule.cycle import CycleResult

log = logging.getLogger("index_builder.schedule")


def utc_clock() -> dt.datetime:
    """Aware UTC now."""
    return dt.datetime.now(dt.UTC)


def run_scheduler(
    cycle: Callable[[dt.datetime], CycleResult],
    calendar: SessionCalendar,
    offset: dt.timedelta,
    *,
    clock: Callable[[], dt.datetime] = utc_clock,
    sleep: Callable[[float], None] = time.sleep,
    should_stop: Callable[[], bool] = lambda: False,
    max_cycles: int | None = None,
) -> list[CycleResult]:
    """Run ``cycle(now)`` now and after every session close + ``offset`` until
    ``should_stop()`` (checked after every wake-up) or ``max_cycles`` cycles ran.

    A failed cycle is not retried before the next session: that cycle backfills
    the missed one. Returns the results (tests read them).
    """
    results: list[CycleResult] = []
    while not should_stop():
        now = clock()
        try:
            results.append(cycle(now))
        except Exception:  # a broken cycle must not stop the schedule
            log.exception("daily cycle crashed")
        if max_cycles is not None and len(results) >= max_cycles:
            break
        due = calendar.next_close_after(clock(), offset)
        if due is None:
            log.error("the exchange calendar ends: the scheduler stops")
            break
        log.info("next daily cycle at %s", due.isoformat())
        while not should_stop() and (wait := (due - clock()).total_seconds()) > 0:
            sleep(min(wait, 3600.0))  # wake hourly: a stop request is seen within the hour
    return results
