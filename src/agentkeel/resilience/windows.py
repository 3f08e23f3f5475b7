"""UTC quota windows: the day or month a moment falls in, and when that window resets.

Quotas count per UTC day (midnight to midnight) and per UTC month (the first of
the month to the first of the next), the same on every replica whatever its
local time zone.

>>> window = utc_window("month", 1_700_000_000.0)  # 2023-11-14T22:13:20Z
>>> window.label, window.end.isoformat(), window.seconds_left(1_700_000_000.0)
('2023-11', '2023-12-01T00:00:00+00:00', 1388800.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

Period = Literal["day", "month"]
PERIODS: tuple[Period, ...] = ("day", "month")

DAY_LABEL_CHARS = 10
"""``YYYY-MM-DD``: how a day window is named (in ledger keys and usage rows)."""
MONTH_LABEL_CHARS = 7
"""``YYYY-MM``: how a month window is named."""


@dataclass(frozen=True, slots=True)
class Window:
    """One UTC day or month: ``start`` inclusive, ``end`` exclusive."""

    period: Period
    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        """``2023-11-14`` for a day, ``2023-11`` for a month."""
        if self.period == "day":
            return self.start.date().isoformat()
        return self.start.strftime("%Y-%m")

    @property
    def first_day(self) -> str:
        """The window's first day, ``YYYY-MM-DD``."""
        return self.start.date().isoformat()

    @property
    def last_day(self) -> str:
        """The window's last day, ``YYYY-MM-DD``."""
        return (self.end - timedelta(days=1)).date().isoformat()

    def seconds_left(self, now: float) -> float:
        """Seconds from ``now`` until the window ends (its quota resets); never below 0."""
        return max(0.0, self.end.timestamp() - now)


def utc_window(period: Period, now: float) -> Window:
    """The UTC ``period`` (``day`` or ``month``) that the unix time ``now`` falls in."""
    moment = datetime.fromtimestamp(now, tz=UTC)
    if period == "day":
        start = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
        return Window(period="day", start=start, end=start + timedelta(days=1))
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    if moment.month == 12:
        end = datetime(moment.year + 1, 1, 1, tzinfo=UTC)
    else:
        end = datetime(moment.year, moment.month + 1, 1, tzinfo=UTC)
    return Window(period="month", start=start, end=end)


def utc_day(now: float) -> str:
    """The UTC day of the unix time ``now``, ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(now, tz=UTC).date().isoformat()
