"""The daily schedule: bring in the latest XNYS session, build, refresh caches."""

from index_builder.schedule.cycle import (
    CycleConfig,
    CycleResult,
    config_from_settings,
    run_daily_cycle,
)
from index_builder.schedule.scheduler import run_scheduler

__all__ = [
    "CycleConfig",
    "CycleResult",
    "config_from_settings",
    "run_daily_cycle",
    "run_scheduler",
]
