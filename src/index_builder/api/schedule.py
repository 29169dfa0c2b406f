"""The daily schedule inside the API process (``INDEX_BUILDER_SCHEDULER_ENABLED``).

DuckDB lets one process write a database file and ``index-builder serve`` holds
it, so the server itself runs the daily cycle in a background thread: the same
:func:`~index_builder.schedule.run_daily_cycle` as ``index-builder daily``,
followed by :meth:`Services.invalidate_caches` (the in-memory build versions
are forgotten and the local cache tier dropped; Redis keys carry the build
version, so they never go stale).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from index_builder.api.deps import Services
from index_builder.schedule import (
    CycleResult,
    config_from_settings,
    run_daily_cycle,
    run_scheduler,
)
from index_builder.schedule.scheduler import utc_clock

log = logging.getLogger("index_builder.schedule")


class ScheduleThread:
    """Runs :func:`run_scheduler` until :meth:`stop`; sleeps wake up on stop."""

    def __init__(
        self, services: Services, *, clock: Callable[[], dt.datetime] | None = None
    ) -> None:
        self.services = services
        self.clock = clock or utc_clock
        self.results: list[CycleResult] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="daily-schedule", daemon=True)

    def start(self) -> None:
        """Start the background thread."""
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the thread to stop and wait for it (a running cycle finishes first)."""
        self._stop.set()
        self._thread.join(timeout)

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _cycle(self, now: dt.datetime) -> CycleResult:
        with self.services.jobs.write_gate:  # no API build while the cycle writes
            result = run_daily_cycle(
                self.services.store,
                config_from_settings(self.services.settings),
                now=now,
                flags=self.services.flags,
                invalidate=self.services.invalidate_caches,
                sleep=self._sleep,
            )
        self.services.record_builds(result.builds)  # readiness sees a failed index
        self.results.append(result)
        return result

    def _run(self) -> None:
        try:
            run_scheduler(
                self._cycle,
                self.services.store.calendar,
                dt.timedelta(minutes=self.services.settings.schedule_offset_minutes),
                clock=self.clock,
                sleep=self._sleep,
                should_stop=self._stop.is_set,
            )
        except Exception:  # the server keeps serving without its schedule
            log.exception("the daily schedule stopped")
