"""PromQL expressions that keel's generated assets carry, named for where they come from,
and the builders both the alerts and the dashboard write them with.

Every alert's signal and every dashboard panel's target is a ``Query``, so one test
can run them all against a live Prometheus (``tests/integration/test_promql_live.py``).
The builders (``sum_rate``, ``quantile``, ``share``, the turn selectors) are the one
place an expression's shape is decided, so a panel and the alert on the same signal
read the same series.

>>> sum_rate(selector("agent_turns_total", 'status="ok"'), ("version",), "5m")
'sum by (version) (rate(agent_turns_total{status="ok"}[5m]))'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

GRAFANA_DEFAULTS: Mapping[str, str] = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$version": ".*",
}
"""Values for Grafana's variables when an expression is run outside Grafana: every
version, and rate windows that suit a scrape interval of a few seconds."""

_VARIABLE = re.compile(r"\$\{?(__[a-z_]+|[a-z_]+)\}?")


@dataclass(frozen=True, slots=True)
class Query:
    """One PromQL expression and where it appears (``alert AgentErrorRateSpike``,
    ``panel System Health / Error rate``)."""

    source: str
    expr: str

    def for_prometheus(self, variables: Mapping[str, str] = GRAFANA_DEFAULTS) -> str:
        """The expression with Grafana's variables replaced, ready for Prometheus' API.

        >>> Query("panel X", 'rate(a{version=~"$version"}[$__rate_interval])').for_prometheus()
        'rate(a{version=~".*"}[1m])'
        """

        def value(match: re.Match[str]) -> str:
            name = f"${match.group(1)}"
            return variables.get(name, match.group(0))

        return _VARIABLE.sub(value, self.expr)


# -- builders -------------------------------------------------------------------------


def number(value: float) -> str:
    """A PromQL number literal: ``0.05``, ``3600``."""
    return f"{value:.15g}"


def selector(metric: str, *matchers: str) -> str:
    """``metric{matcher, ...}``; ``metric`` alone without matchers."""
    return f"{metric}{{{', '.join(matchers)}}}" if matchers else metric


def sum_rate(series: str, by: Sequence[str], window: str) -> str:
    """``sum by (by) (rate(series[window]))``; ``by`` empty: one series."""
    grouping = f"sum by ({', '.join(by)}) " if by else "sum "
    return f"{grouping}(rate({series}[{window}]))"


def quantile(q: float, buckets: str, by: Sequence[str], window: str) -> str:
    """The ``q`` quantile of the histogram whose ``_bucket`` series ``buckets`` selects,
    per ``by``."""
    return f"histogram_quantile({number(q)}, {sum_rate(buckets, (*by, 'le'), window)})"


def share(part: str, total: str) -> str:
    """``part / total`` that is 0, not absent, while ``part`` has no series yet (a busy,
    healthy service has no error series)."""
    return f"(\n  {part}\n  or {total} * 0\n)\n/ {total}"


def served_turns(ignored_statuses: Sequence[str], *matchers: str) -> str:
    """``agent_turns_total`` without the turns whose status is the caller's doing
    (``alerts.error_rate.ignored_statuses``): the turns the service is judged on."""
    ignored = "|".join(ignored_statuses)
    status = (f'status!~"{ignored}"',) if ignored else ()
    return selector("agent_turns_total", *matchers, *status)


def failed_turns(ignored_statuses: Sequence[str], *matchers: str) -> str:
    """``agent_turns_total`` of the served turns that did not end ``ok``: the turns that
    failed through the service's own fault."""
    not_failed = "|".join(("ok", *ignored_statuses))
    return selector("agent_turns_total", *matchers, f'status!~"{not_failed}"')
