"""Exchange sessions from ``exchange_calendars`` (XNYS by default).

A weekday is not a trading day: every session rule in the project goes through
:class:`SessionCalendar`.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import exchange_calendars as xc
import numpy as np
from numpy.typing import NDArray

from index_builder.errors import InvalidInputError

_YEARS_AHEAD = 2


class SessionCalendar:
    """Sorted session dates of one exchange with fast membership and next-session lookup."""

    def __init__(self, code: str = "XNYS", start: str = "1990-01-01") -> None:
        end = dt.date(dt.date.today().year + _YEARS_AHEAD, 12, 31)
        try:
            cal = xc.get_calendar(code, start=start, end=end.isoformat())
        except Exception as exc:  # exchange_calendars raises several types
            raise InvalidInputError(f"unknown exchange calendar {code!r}: {exc}") from exc
        self.code = code
        self.sessions: NDArray[np.datetime64] = cal.sessions.values.astype("datetime64[D]")
        # each session's close, UTC (early closes included)
        self.closes: NDArray[np.datetime64] = cal.closes.values.astype("datetime64[s]")
        self.first = _to_date(self.sessions[0])
        self.last = _to_date(self.sessions[-1])

    def session_dates(self) -> list[dt.date]:
        """All sessions as ``datetime.date``."""
        return [_to_date(s) for s in self.sessions]

    def is_session(self, day: dt.date) -> bool:
        """True when ``day`` is a session of this exchange."""
        d = np.datetime64(day, "D")
        i = int(np.searchsorted(self.sessions, d))
        return i < len(self.sessions) and self.sessions[i] == d

    def next_sessions(self, days: NDArray[np.datetime64]) -> NDArray[np.datetime64]:
        """For each date, the first session strictly after it (NaT past the calendar end)."""
        idx = np.searchsorted(self.sessions, days.astype("datetime64[D]"), side="right")
        out = np.full(len(idx), np.datetime64("NaT"), dtype="datetime64[D]")
        ok = idx < len(self.sessions)
        out[ok] = self.sessions[idx[ok]]
        return out

    def session_after(self, day: dt.date, count: int) -> dt.date | None:
        """The ``count``-th session after ``day`` (1: the next one); None past the end."""
        i = int(np.searchsorted(self.sessions, np.datetime64(day, "D"), side="right")) + count - 1
        return _to_date(self.sessions[i]) if i < len(self.sessions) else None

    def close_of(self, day: dt.date) -> dt.datetime | None:
        """The close of session ``day`` (aware UTC); None when ``day`` is no session."""
        d = np.datetime64(day, "D")
        i = int(np.searchsorted(self.sessions, d))
        if i >= len(self.sessions) or self.sessions[i] != d:
            return None
        return _to_utc(self.closes[i])

    def last_closed_session(self, moment: dt.datetime, grace: dt.timedelta) -> dt.date | None:
        """The latest session whose close + ``grace`` is at or before ``moment`` (aware)."""
        limit = np.datetime64(moment.astimezone(dt.UTC).replace(tzinfo=None) - grace, "s")
        i = int(np.searchsorted(self.closes, limit, side="right")) - 1
        return _to_date(self.sessions[i]) if i >= 0 else None

    def sessions_between(self, after: dt.date, upto: dt.date) -> list[dt.date]:
        """Sessions d with ``after < d <= upto``, ascending."""
        lo = int(np.searchsorted(self.sessions, np.datetime64(after, "D"), side="right"))
        hi = int(np.searchsorted(self.sessions, np.datetime64(upto, "D"), side="right"))
        return [_to_date(s) for s in self.sessions[lo:hi]]

    def next_close_after(self, moment: dt.datetime, grace: dt.timedelta) -> dt.datetime | None:
        """The first session close + ``grace`` strictly after ``moment`` (aware UTC);
        None past the calendar end."""
        limit = np.datetime64(moment.astimezone(dt.UTC).replace(tzinfo=None) - grace, "s")
        i = int(np.searchsorted(self.closes, limit, side="right"))
        return _to_utc(self.closes[i]) + grace if i < len(self.closes) else None


def _to_utc(value: np.datetime64) -> dt.datetime:
    seconds = int(value.astype("datetime64[s]").astype(np.int64))
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def _to_date(value: np.datetime64) -> dt.date:
    return dt.date.fromisoformat(str(value.astype("datetime64[D]")))


@lru_cache(maxsize=4)
def get_calendar(code: str = "XNYS", start: str = "1990-01-01") -> SessionCalendar:
    """A cached calendar per (code, start); building one takes ~0.2 s."""
    return SessionCalendar(code, start)
