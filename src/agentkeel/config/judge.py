"""``JudgeSettings``: how the canary judge compares a new version with the stable one.

Which metric families form which rate or distribution is declared here once; the
replica scrape source reads the selectors, the Prometheus source the queries
(written out from the selectors unless a metric names its own PromQL). A metric
entry given in ``keel.yaml`` is laid over the default of the same name, so
``rates: {tool_success: {tolerance: 0.01}}`` changes only the tolerance;
``enabled: false`` leaves a metric out.

Selectors are PromQL instant-vector selectors without the version, e.g.
``agent_tool_calls_total{status!="success"}``; several are summed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

JudgeMethod = Literal["sequential", "two-sigma"]
Direction = Literal["higher", "lower"]

_WRITES = 'operation=~"create_memory|update_memory|delete_memory"'

DEFAULT_RATES: dict[str, dict[str, Any]] = {
    "tool_success": {
        "description": "failed tool calls / tool calls",
        "events": ['agent_tool_calls_total{status!="success"}'],
        "trials": ["agent_tool_calls_total"],
        # The headline metric gets a third of the false-rollback budget (4 of 12),
        # and its events are common enough for the normal approximation from 10
        # expected canary events (measured: its false alarms stay within its share).
        "weight": 4.0,
        "min_expected_events": 10.0,
    },
    "model_errors": {
        "description": "failed model requests / model requests",
        "events": ["agent_model_errors_total"],
        "trials": ["agent_model_errors_total", "agent_model_request_duration_seconds_count"],
        "mixture_sd": 0.02,
    },
    "memory_write_errors": {
        "description": "refused memory writes / memory writes",
        "events": [f'agent_memory_client_calls_total{{{_WRITES},status!~"ok|queued"}}'],
        "trials": [f"agent_memory_client_calls_total{{{_WRITES}}}"],
        "mixture_sd": 0.02,
    },
    "guardrail_trips": {
        "description": "guardrail interventions / turns",
        "events": [
            'agent_guardrail_events_total{guardrail!~"context_trimmed|input_empty|input_too_large"}'
        ],
        "trials": ["agent_turns_total"],
        "mixture_sd": 0.02,
    },
    "turn_errors": {
        "description": "failed turns / turns",
        "events": ['agent_turns_total{status!="ok"}'],
        "trials": ["agent_turns_total"],
        "mixture_sd": 0.02,
    },
}

DEFAULT_DISTRIBUTIONS: dict[str, dict[str, Any]] = {
    "turn_latency": {
        "description": "turn duration (seconds)",
        "histogram": "agent_turn_duration_seconds",
    },
    "tokens_per_turn": {
        "description": "tokens of one turn",
        "histogram": "agent_turn_tokens",
    },
    "context_utilization": {
        "description": "context window used at each model call",
        "histogram": "agent_model_context_utilization_ratio",
    },
    "feedback_score": {
        "description": "user feedback scores",
        "histogram": "agent_feedback_score",
        "harmful": "lower",
    },
}


class RateMetric(BaseModel):
    """A rate compared as counts: harmful ``events`` out of ``trials``.

    The canary fails when its rate exceeds the stable one by more than
    ``tolerance`` (an absolute difference: 0.01 = one point) with the evidence the
    metric's share of the judge's ``alpha`` asks for (``weight``, see
    ``JudgeSettings``). ``mixture_sd`` is the size of the differences the
    sequential test is tuned to find fastest (larger ones are found sooner still).
    Fewer than ``min_trials`` on either side is inconclusive, and so are fewer
    than ``min_expected_events`` canary events expected at the pooled rate while
    the canary looks worse (the normal approximation needs them).
    """

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    enabled: bool = True
    events: list[str] = Field(min_length=1)
    trials: list[str] = Field(min_length=1)
    tolerance: float = Field(default=0.0, ge=0.0, lt=1.0)
    weight: float = Field(default=1.0, gt=0.0)
    mixture_sd: float = Field(default=0.05, gt=0.0, le=1.0)
    min_trials: int = Field(default=100, ge=1)
    min_expected_events: float = Field(default=15.0, ge=0.0)
    events_query: str | None = None
    trials_query: str | None = None

    @field_validator("events", "trials", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class DistributionMetric(BaseModel):
    """A continuous metric compared by rank (Mann-Whitney over the histogram buckets).

    The effect is the probability that a canary observation is worse (in the
    ``harmful`` direction) than a stable one, ties counting half: 0.5 means no
    difference. The canary fails when that probability exceeds
    ``0.5 + tolerance`` with the evidence its share of ``alpha`` asks for.
    """

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    enabled: bool = True
    histogram: str
    harmful: Direction = "higher"
    tolerance: float = Field(default=0.05, ge=0.0, lt=0.5)
    weight: float = Field(default=1.0, gt=0.0)
    mixture_sd: float = Field(default=0.1, gt=0.0, le=0.5)
    min_samples: int = Field(default=50, ge=1)
    query: str | None = None


def _over_defaults(value: Any, defaults: dict[str, dict[str, Any]]) -> Any:
    """Lay configured entries over the default entry of the same name."""
    if value is None:
        return {name: dict(entry) for name, entry in defaults.items()}
    if not isinstance(value, dict):
        return value
    merged: dict[str, Any] = {name: dict(entry) for name, entry in defaults.items()}
    for name, entry in value.items():
        if isinstance(entry, dict) and name in merged:
            merged[name] = {**merged[name], **entry}
        elif isinstance(entry, BaseModel):
            merged[name] = entry
        else:
            merged[name] = entry
    return merged


class PrometheusJudgeSettings(BaseModel):
    """Read the figures from Prometheus' HTTP API instead of the replicas."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    timeout_s: float = Field(default=10.0, gt=0)
    version_label: str = "version"


class JudgeSettings(BaseModel):
    """The behaviour judge of a rollout (``rollout.judge:``).

    ``method: sequential`` (the default) compares rates as counts with a mixture
    sequential probability ratio test and continuous metrics by rank, both
    valid however often the verdict is looked at; ``two-sigma`` is the operations
    guide's rule (a canary interval more than ``sigmas`` standard deviations of
    the stable version's per-interval values worse than their mean), kept for
    comparison: its false-alarm rate is far higher (see the README).
    ``alpha`` bounds, per rollout, the chance that a canary no worse than its
    tolerances is ever rolled back: it is spent across the enabled metrics in
    proportion to their ``weight`` (``metric_alpha``), and a false rollback
    needs at least one metric to fail falsely, so the shares add up to at most
    ``alpha``. ``consecutive_failures`` failing intervals in a row call for a
    rollback.
    """

    model_config = ConfigDict(extra="forbid")

    method: JudgeMethod = "sequential"
    alpha: float = Field(default=0.005, gt=0.0, lt=0.5)
    consecutive_failures: int = Field(default=2, ge=1)
    interval_s: float = Field(default=60.0, gt=0)
    sigmas: float = Field(default=2.0, gt=0)
    min_baseline_intervals: int = Field(default=5, ge=2)
    rates: dict[str, RateMetric] = Field(default_factory=dict)
    distributions: dict[str, DistributionMetric] = Field(default_factory=dict)
    prometheus: PrometheusJudgeSettings = Field(default_factory=PrometheusJudgeSettings)

    @model_validator(mode="before")
    @classmethod
    def _defaults_below(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        data["rates"] = _over_defaults(data.get("rates"), DEFAULT_RATES)
        data["distributions"] = _over_defaults(data.get("distributions"), DEFAULT_DISTRIBUTIONS)
        return data

    def enabled_rates(self) -> dict[str, RateMetric]:
        return {name: m for name, m in self.rates.items() if m.enabled}

    def enabled_distributions(self) -> dict[str, DistributionMetric]:
        return {name: m for name, m in self.distributions.items() if m.enabled}

    def metric_alpha(self, metric: RateMetric | DistributionMetric) -> float:
        """The share of ``alpha`` one enabled metric may spend: ``alpha * weight / total``.

        Fixed by the configuration before any data is seen, which is what lets the
        shares add up (a union bound over metrics).
        """
        total = sum(m.weight for m in self.enabled_rates().values()) + sum(
            m.weight for m in self.enabled_distributions().values()
        )
        return self.alpha * metric.weight / total if total > 0 else self.alpha
