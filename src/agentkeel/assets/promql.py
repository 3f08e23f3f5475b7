"""PromQL expressions that keel's generated assets carry, named for where they come from.

Every alert's signal and every dashboard panel's target is a ``Query``, so one test
can run them all against a live Prometheus (``tests/integration/test_promql_live.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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
