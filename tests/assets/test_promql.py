"""The PromQL builders the alerts and the dashboard share (``assets/promql.py``)."""

from __future__ import annotations

import re

from agentkeel.assets.promql import (
    failed_turns,
    number,
    quantile,
    selector,
    served_turns,
    share,
    sum_rate,
)


def test_sum_rate_groups_by_the_labels_or_sums_everything() -> None:
    """``by`` names the grouping; without one the rate is one series."""
    series = selector("agent_turns_total", 'status="ok"')
    assert sum_rate(series, ("agent", "version"), "5m") == (
        'sum by (agent, version) (rate(agent_turns_total{status="ok"}[5m]))'
    )
    assert sum_rate("agent_turns_total", (), "1m") == "sum (rate(agent_turns_total[1m]))"


def test_quantile_groups_the_buckets_by_le_as_well() -> None:
    """histogram_quantile needs ``le`` kept: it is added to the grouping."""
    expr = quantile(0.95, "h_bucket", ("job",), "5m")
    assert expr == "histogram_quantile(0.95, sum by (job, le) (rate(h_bucket[5m])))"
    assert quantile(0.5, "h_bucket", (), "5m").startswith("histogram_quantile(0.5, sum by (le)")
    assert number(3600.0) == "3600" and number(0.1) == "0.1"


def test_share_is_zero_while_the_part_has_no_series() -> None:
    """``(part or total * 0) / total``: a healthy service reads 0, not "no data"."""
    assert " ".join(share("a", "b").split()) == "( a or b * 0 ) / b"


def test_failed_turns_are_served_turns_that_did_not_end_ok() -> None:
    """The failed selector leaves out ok and every ignored status; the served one only
    the ignored; both keep the caller's matchers (a dashboard's version filter)."""
    version = 'version=~"$version"'
    served = served_turns(["draining", "rate_limited"], version)
    failed = failed_turns(["draining", "rate_limited"], version)
    assert served == f'agent_turns_total{{{version}, status!~"draining|rate_limited"}}'
    assert failed == f'agent_turns_total{{{version}, status!~"ok|draining|rate_limited"}}'
    assert served_turns([]) == "agent_turns_total"
    assert re.search(r'status!~"ok"', failed_turns([]))
