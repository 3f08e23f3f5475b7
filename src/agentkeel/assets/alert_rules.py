"""The five alerts (``agent_alerts.yml``), their thresholds from ``alerts:`` settings.

Each alert is a ``signal``, the measured value in PromQL, and an ``expr``, the firing
condition on it: ``signal > threshold`` and, so that a quiet service never fires, a
minimum traffic rate over the same window. Signals read 0, not "no data", for a
healthy service that serves traffic but has had no bad event yet (``… or total * 0``),
and NaN or nothing when there is no traffic at all; every comparison with NaN is
false, so a quiet service is silent.

Alerts are grouped by what an operator acts on: agent and version for turns and
context (a canary's spike shows as its own version), provider and version for the
model API, the scrape target (job, instance) for the memory server, the agent for
session length (that family has no version).

Each alert links to two places of the runbook (``alerts.runbook_url``): its own section
(``runbook_url``) and the playbook of the failure mode it most often means
(``playbook_url``, ``PLAYBOOKS``). The three histogram alerts compare a quantile with
their threshold; their text says what that means: a p95 above X is at least 5 % of the
events above X.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import Node
from yaml.representer import BaseRepresenter

from agentkeel.assets.promql import (
    Query,
    failed_turns,
    number,
    quantile,
    served_turns,
    share,
    sum_rate,
)
from agentkeel.config.alerts import AlertSettings

GROUP_NAME = "agentkeel-alerts"

ERROR_RATE = "AgentErrorRateSpike"
CONTEXT_EXHAUSTION = "AgentContextWindowExhaustion"
MEMORY_LATENCY = "AgentMemoryLatencyDegraded"
MODEL_TIMEOUTS = "AgentModelTimeoutRate"
SESSION_DURATION = "AgentSessionDurationAbnormal"
ALERT_NAMES = (ERROR_RATE, CONTEXT_EXHAUSTION, MEMORY_LATENCY, MODEL_TIMEOUTS, SESSION_DURATION)

MEMORY_HOT_OPERATIONS = (
    "create_memory",
    "get_memory",
    "search_memory",
    "update_memory",
    "delete_memory",
    "batch_memory",
)
"""The memory operations a turn waits on; snapshots, verifies, restores and integrity
checks take seconds to minutes by design and are left out of the latency alert."""

PLAYBOOKS: Mapping[str, str] = {
    # Server-side turn failures are most often the model API (model_unavailable); the
    # alert's runbook section sends the other statuses to their playbooks.
    ERROR_RATE: "model-api-degradation",
    CONTEXT_EXHAUSTION: "context-poisoning",
    MEMORY_LATENCY: "memory-corruption",
    MODEL_TIMEOUTS: "model-api-degradation",
    SESSION_DURATION: "tool-call-storm",
}
"""Alert -> the anchor of the failure-mode playbook in ``docs/runbook.md`` its
``playbook_url`` leads to."""

# Go template pieces of the annotations (Prometheus expands them per alert).
_AGENT = "{{ $labels.agent }}"
_VERSION = "{{ $labels.version }}"
_PROVIDER = "{{ $labels.provider }}"
_INSTANCE = "{{ $labels.instance }}"
_PERCENT = "{{ $value | humanizePercentage }}"
_DURATION = "{{ $value | humanizeDuration }}"


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One alert: ``signal`` is the measured value (PromQL), ``expr`` the firing condition
    built on it."""

    name: str
    signal: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    runbook_url: str
    """The alert's own section of the runbook."""
    playbook_url: str
    """The playbook of the failure mode the alert most often means."""
    by: tuple[str, ...] = ()
    """The labels each firing alert carries from its series (its grouping)."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Labels of the rule itself besides ``severity`` (``alerts.labels``)."""

    @property
    def anchor(self) -> str:
        """The alert's section in ``docs/runbook.md`` (a heading that is its name)."""
        return self.name.lower()


def alert_rules(settings: AlertSettings) -> list[AlertRule]:
    """The five alerts with ``settings``' thresholds."""
    return [
        _error_rate(settings),
        _context_exhaustion(settings),
        _memory_latency(settings),
        _model_timeouts(settings),
        _session_duration(settings),
    ]


def render_alerts(settings: AlertSettings) -> str:
    """``agent_alerts.yml``: one Prometheus rule group with the five alerts."""
    rules = [_rule_document(rule) for rule in alert_rules(settings)]
    document = {"groups": [{"name": GROUP_NAME, "rules": rules}]}
    header = (
        "# Written by `keel render alerts` from the alerts: settings; thresholds and\n"
        "# what to do when one fires: docs/runbook.md.\n"
    )
    return header + yaml.dump(
        document, Dumper=_BlockDumper, sort_keys=False, width=10_000, allow_unicode=True
    )


def alert_queries(settings: AlertSettings) -> list[Query]:
    """Each alert's signal and its firing expression, for the live PromQL test.

    ``alert NAME`` is a signal: it returns a value for every group of a busy, healthy
    stack. ``alert NAME (expr)`` is the firing condition: valid PromQL that returns
    nothing while the stack is healthy."""
    queries: list[Query] = []
    for rule in alert_rules(settings):
        queries.append(Query(f"alert {rule.name}", rule.signal))
        queries.append(Query(f"alert {rule.name} (expr)", rule.expr))
    return queries


# -- the five -------------------------------------------------------------------------


def _error_rate(settings: AlertSettings) -> AlertRule:
    alert = settings.error_rate
    window = settings.window_of(alert)
    by = ("agent", "version")
    turns = sum_rate(served_turns(alert.ignored_statuses), by, window)
    signal = share(sum_rate(failed_turns(alert.ignored_statuses), by, window), turns)
    return _rule(
        settings,
        name=ERROR_RATE,
        signal=signal,
        threshold=alert.threshold,
        traffic=turns,
        min_rps=alert.min_rps,
        by=by,
        for_=alert.for_duration,
        severity=alert.severity,
        summary=f"Agent {_AGENT} {_VERSION}: {_PERCENT} of turns fail",
        description=(
            f"{_PERCENT} of the turns of agent {_AGENT} version {_VERSION} failed with a "
            f"server-side status over {window} (threshold {_percent(alert.threshold)}; "
            "statuses the caller caused are not counted). Look first at which status "
            f'rises, `sum by (status) (rate(agent_turns_total{{agent="{_AGENT}",'
            f'version="{_VERSION}"}}[{window}]))`, then at the error lines: `keel logs tail '
            "--category error`. A version only the canary runs points at the release: "
            "`keel rollout status`."
        ),
    )


def _context_exhaustion(settings: AlertSettings) -> AlertRule:
    alert = settings.context_exhaustion
    window = settings.window_of(alert)
    by = ("agent", "version")
    histogram = "agent_model_context_utilization_ratio"
    signal = (
        f"{quantile(settings.quantile, f'{histogram}_bucket', by, window)}\n"
        f"or {sum_rate('agent_turns_total', by, window)} * 0"
    )
    return _rule(
        settings,
        name=CONTEXT_EXHAUSTION,
        signal=signal,
        threshold=alert.threshold,
        traffic=sum_rate(f"{histogram}_count", by, window),
        min_rps=alert.min_rps,
        by=by,
        for_=alert.for_duration,
        severity=alert.severity,
        summary=f"Agent {_AGENT} {_VERSION}: {_p(settings.quantile)} of context window use "
        f"is {_PERCENT}",
        description=(
            f"The {_p(settings.quantile)} of context window use per model call of agent "
            f"{_AGENT} version {_VERSION} over {window} is {_PERCENT} (threshold "
            f"{_percent(alert.threshold)}): {_tail(settings.quantile)} of the model calls "
            f"used more than {_percent(alert.threshold)} of the model's context window. Near "
            "the limit old tool results are trimmed, replies degrade and calls fail. Look "
            "first at what fills the context "
            "of the longest sessions (large tool results, recalled memories, a loop): "
            "`keel logs tail --category reasoning_trace`, then `keel logs trace` with a "
            "turn's correlation id."
        ),
    )


def _memory_latency(settings: AlertSettings) -> AlertRule:
    alert = settings.memory_latency
    window = settings.window_of(alert)
    by = ("job", "instance")
    operations = "|".join(MEMORY_HOT_OPERATIONS)
    histogram = "agent_memory_operation_duration_seconds"
    matcher = f'{{operation=~"{operations}"}}'
    signal = (
        f"{quantile(settings.quantile, f'{histogram}_bucket{matcher}', by, window)}\n"
        f"or sum by ({', '.join(by)}) (agent_memory_store_memories) * 0"
    )
    return _rule(
        settings,
        name=MEMORY_LATENCY,
        signal=signal,
        threshold=alert.threshold_s,
        traffic=sum_rate(f"{histogram}_count{matcher}", by, window),
        min_rps=alert.min_rps,
        by=by,
        for_=alert.for_duration,
        severity=alert.severity,
        summary=f"Memory server {_INSTANCE}: {_p(settings.quantile)} of operation latency "
        f"is {_DURATION}",
        description=(
            f"The {_p(settings.quantile)} of the memory operations agents wait on (create, "
            f"get, search, update, delete, batch) at {_INSTANCE} over {window} is "
            f"{_DURATION} (threshold {_seconds(alert.threshold_s)}): {_tail(settings.quantile)}"
            f" of the operations took longer than {_seconds(alert.threshold_s)}. Every turn "
            "that reads memory waits as long. Look first at the memory server's error "
            "lines (`keel logs tail --service memory --category error`), at a snapshot, "
            "verify or restore running (`keel snapshot list`, `keel audit show --since 1h "
            "--action memory.`), then at the store itself: `keel memory integrity`."
        ),
    )


def _model_timeouts(settings: AlertSettings) -> AlertRule:
    alert = settings.model_timeouts
    window = settings.window_of(alert)
    by = ("provider", "version")
    # Failed attempts and successful calls together are the attempts; a provider that
    # only ever fails has no success series, so the two are summed as one selector.
    attempts = sum_rate(
        '{__name__=~"agent_model_errors_total|agent_model_request_duration_seconds_count"}',
        by,
        window,
    )
    timeouts = sum_rate('agent_model_errors_total{kind="timeout"}', by, window)
    signal = share(timeouts, attempts)
    return _rule(
        settings,
        name=MODEL_TIMEOUTS,
        signal=signal,
        threshold=alert.threshold,
        traffic=attempts,
        min_rps=alert.min_rps,
        by=by,
        for_=alert.for_duration,
        severity=alert.severity,
        summary=f"Model provider {_PROVIDER} ({_VERSION}): {_PERCENT} of calls time out",
        description=(
            f"{_PERCENT} of the model call attempts of version {_VERSION} to provider "
            f"{_PROVIDER} timed out over {window} (threshold {_percent(alert.threshold)}). "
            "Retries and the fallback chain absorb some; turns wait the timeout each time. "
            "Look first at the provider's status page and its breaker "
            f'(`agent_model_breaker_state{{provider="{_PROVIDER}"}}`: 2 = open), then at the '
            "warnings: `keel logs tail --category error --level warning`. Turns that fail "
            "for it fire AgentErrorRateSpike too."
        ),
    )


def _session_duration(settings: AlertSettings) -> AlertRule:
    alert = settings.session_duration
    window = settings.window_of(alert)
    by = ("agent",)
    histogram = "agent_session_duration_seconds"
    signal = (
        f"{quantile(settings.quantile, f'{histogram}_bucket', by, window)}\n"
        f"or {sum_rate('agent_turns_total', by, window)} * 0"
    )
    return _rule(
        settings,
        name=SESSION_DURATION,
        signal=signal,
        threshold=alert.threshold_s,
        traffic=sum_rate(f"{histogram}_count", by, window),
        min_rps=alert.min_rps,
        by=by,
        for_=alert.for_duration,
        severity=alert.severity,
        summary=f"Agent {_AGENT}: {_p(settings.quantile)} of session length is {_DURATION}",
        description=(
            f"The {_p(settings.quantile)} length of the sessions of agent {_AGENT} that "
            f"ended over {window} is {_DURATION} (threshold {_seconds(alert.threshold_s)}): "
            f"{_tail(settings.quantile)} of them lasted longer than "
            f"{_seconds(alert.threshold_s)}. Sessions that long are seldom a person: "
            "look first for a loop, a client that resends, a tool-call storm or a poisoned "
            "context. Start with the live sessions (`keel sessions live`) and the tool "
            "calls (`keel logs tail --category tool_call`)."
        ),
    )


# -- building blocks ------------------------------------------------------------------


def _rule(
    settings: AlertSettings,
    *,
    name: str,
    signal: str,
    threshold: float,
    traffic: str,
    min_rps: float,
    by: tuple[str, ...],
    for_: str,
    severity: str,
    summary: str,
    description: str,
) -> AlertRule:
    expr = (
        f"(\n{_indent(signal)}\n) > {number(threshold)}\n"
        f"and on ({', '.join(by)}) {traffic} > {number(min_rps)}"
    )
    return AlertRule(
        name=name,
        signal=signal,
        expr=expr,
        for_=for_,
        severity=severity,
        summary=summary,
        description=description,
        runbook_url=f"{settings.runbook_url}#{name.lower()}",
        playbook_url=f"{settings.runbook_url}#{PLAYBOOKS[name]}",
        by=by,
        labels=dict(settings.labels),
    )


def _rule_document(rule: AlertRule) -> dict[str, Any]:
    return {
        "alert": rule.name,
        "expr": rule.expr,
        "for": rule.for_,
        "labels": {"severity": rule.severity, **rule.labels},
        "annotations": {
            "summary": rule.summary,
            "description": rule.description,
            "runbook_url": rule.runbook_url,
            "playbook_url": rule.playbook_url,
        },
    }


def _percent(value: float) -> str:
    return f"{value * 100:.4g}%"


def _p(quantile: float) -> str:
    """A quantile as a percentile's name: ``p95``, ``p99.9``."""
    return f"p{quantile * 100:.4g}"


def _tail(quantile: float) -> str:
    """What a quantile above a threshold says: at least this share of the events is
    above it (a p95 above X: at least 5% exceed X)."""
    return f"at least {_percent(1 - quantile)}"


def _seconds(value: float) -> str:
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if value >= size:
            return f"{value / size:.4g}{unit}"
    return f"{value * 1000:.4g}ms"


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


def _represent_str(dumper: BaseRepresenter, value: Any) -> Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the expressions) as YAML block literals, so the file reads
    like PromQL."""

    yaml_representers = {**yaml.SafeDumper.yaml_representers, str: _represent_str}
