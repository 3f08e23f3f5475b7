"""``RolloutSettings``: releases, strategies and rollback (``rollout:``; ``keel rollout``).

Every duration is in seconds of *rollout time*: ``time_scale`` (``--time-scale``)
divides them all for a rehearsal, so ``time_scale: 60`` runs a 30-minute canary
step in 30 seconds and analyses every second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentkeel.config.judge import JudgeSettings

StrategyName = Literal["canary", "bluegreen", "rolling"]
SessionPolicyName = Literal["pinned", "move-at-turn"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CanaryStep(_Section):
    """One canary step: ``weight`` % of new sessions for ``duration_s``."""

    weight: int = Field(ge=1, le=99, description="Share of new sessions the new version gets.")
    duration_s: float = Field(gt=0, description="How long the step lasts when the judge passes.")


def _default_steps() -> list[CanaryStep]:
    return [
        CanaryStep(weight=5, duration_s=30 * 60),
        CanaryStep(weight=25, duration_s=2 * 3600),
        CanaryStep(weight=50, duration_s=4 * 3600),
    ]


class CanarySettings(_Section):
    """Canary: weighted steps judged every analysis interval, then 100 %."""

    steps: list[CanaryStep] = Field(
        default_factory=_default_steps,
        description="Weights in increasing order; after the last one the new version gets 100 %.",
    )
    max_extension: float = Field(
        default=1.0,
        ge=0,
        description="An inconclusive verdict at the end of a step holds it, for at most this "
        "fraction of the step's duration; then the rollout pauses for an operator.",
    )
    drain_deadline_s: float = Field(
        default=30 * 60,
        gt=0,
        description="After promotion the previous version keeps its live sessions until they "
        "end or this passes; then they move at their next turn and its replicas stop.",
    )

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[CanaryStep]) -> list[CanaryStep]:
        if not steps:
            raise ValueError("rollout.canary.steps is empty; give at least one step")
        weights = [step.weight for step in steps]
        if weights != sorted(set(weights)):
            raise ValueError(f"rollout.canary.steps: weights must increase, got {weights}")
        return steps


class BlueGreenSettings(_Section):
    """Blue/green: switch every new session at once; blue stays warm for a switch-back."""

    drain_deadline_s: float = Field(
        default=30 * 60,
        gt=0,
        description="Blue serves its live sessions until they end or this passes; then they "
        "move to green at their next turn.",
    )
    switch_back_window_s: float = Field(
        default=60 * 60,
        ge=0,
        description="Blue's replicas keep running this long after the switch, so "
        "`keel rollout abort` puts new sessions back on blue at once.",
    )


class RollingSettings(_Section):
    """Rolling: replace the previous version's replicas one batch at a time."""

    batch: int = Field(default=1, ge=1, description="Replicas replaced at a time.")
    drain_deadline_s: float = Field(
        default=10 * 60,
        gt=0,
        description="When the last old replica goes, the old version's sessions keep it this "
        "long (until they end); then they move at their next turn.",
    )


class ReleaseSettings(_Section):
    """A release as ``keel.yaml`` describes it; every field can be given on the command line."""

    version: str | None = Field(default=None, description="The new version's name, e.g. v2.")
    entrypoint: str | None = Field(
        default=None, description="package.module:agent for its replicas; unset = the stack's."
    )
    config: str | None = Field(
        default=None, description="A keel.yaml for its replicas; unset = the stack's."
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra non-secret KEEL_* values for its replicas."
    )
    strategy: StrategyName | None = Field(default=None, description="unset = rollout.strategy")
    policy: SessionPolicyName = Field(
        default="pinned",
        description="What happens to the previous version's sessions once it is retired: "
        "pinned (they stay until they end) or move-at-turn.",
    )


class RolloutSettings(BaseModel):
    """Defaults for ``keel rollout`` and ``keel rollback``."""

    model_config = ConfigDict(extra="forbid")

    judge: JudgeSettings = Field(default_factory=JudgeSettings)
    strategy: StrategyName = "canary"
    release: ReleaseSettings = Field(default_factory=ReleaseSettings)
    canary: CanarySettings = Field(default_factory=CanarySettings)
    bluegreen: BlueGreenSettings = Field(default_factory=BlueGreenSettings)
    rolling: RollingSettings = Field(default_factory=RollingSettings)
    analysis_interval_s: float = Field(
        default=60.0, gt=0, description="How often the judge compares canary and stable."
    )
    time_scale: float = Field(
        default=1.0, gt=0, description="Divides every duration (rehearsals: --time-scale 60)."
    )
    replicas: int | None = Field(
        default=None,
        ge=1,
        le=32,
        description="Replicas of the new version; unset = as many as the previous version has.",
    )
    golden_suite: Path | None = Field(
        default=None, description="A golden-checks YAML run against the new version directly."
    )
    require_golden_before_traffic: bool = Field(
        default=False,
        description="Canary and blue/green run golden_suite and need it to pass before the "
        "new version gets any session.",
    )
    auto_state_rollback: bool = Field(
        default=False,
        description="When the judge fails: false = roll back the code and recommend the "
        "memory restore; true = run the whole rollback, memory state included.",
    )
    snapshot: bool = Field(
        default=True,
        description="Take a memory snapshot (kind deploy) before the rollout starts; "
        "false only for stacks without a memory server.",
    )
    poll_interval_s: float = Field(
        default=0.2,
        gt=0,
        le=1.0,
        description="Real seconds between the controller's looks at requests "
        "(promote, pause, resume, abort) from other processes.",
    )
    heartbeat_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="A controller whose heartbeat is older than this is taken for dead.",
    )

    @model_validator(mode="after")
    def _golden_when_required(self) -> RolloutSettings:
        if self.require_golden_before_traffic and self.golden_suite is None:
            raise ValueError(
                "rollout.require_golden_before_traffic is true but rollout.golden_suite is "
                "unset; name the golden-checks YAML file"
            )
        return self
