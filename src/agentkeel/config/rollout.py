"""``RolloutSettings``: releases, strategies and rollback (``rollout:``; ``keel rollout``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from agentkeel.config.judge import JudgeSettings


class RolloutSettings(BaseModel):
    """Defaults for ``keel rollout`` and ``keel rollback``."""

    model_config = ConfigDict(extra="forbid")

    judge: JudgeSettings = Field(default_factory=JudgeSettings)
