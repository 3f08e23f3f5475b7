"""Prometheus durations (``15s``, ``5m``, ``1h30m``) in seconds: the grammar of
Prometheus' ``model.ParseDuration``, shared by the alert settings (``for``, rate
windows) and the scrape configuration (intervals).

No Python library reads this grammar and it is one regular expression, so it is
written here.

>>> duration_seconds("1h30m")
5400.0
"""

from __future__ import annotations

import re

__all__ = ["duration_seconds"]

# Units largest first, each at most once, as Prometheus writes and reads them.
_DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_UNIT_SECONDS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)


def duration_seconds(text: str) -> float:
    """Seconds in a Prometheus duration (``90s``, ``5m``, ``1h30m``, ``0``); ``ValueError``
    that quotes ``text`` for anything else."""
    if text == "0":
        return 0.0
    match = _DURATION.match(text)
    if match is None or not any(match.groups()):
        raise ValueError(
            f"{text!r} is not a Prometheus duration; write it like 30s, 5m, 1h or 1h30m"
        )
    return float(
        sum(int(n) * unit for n, unit in zip(match.groups(), _UNIT_SECONDS, strict=True) if n)
    )
