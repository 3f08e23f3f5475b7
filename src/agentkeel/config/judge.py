"""``JudgeSettings``: how the canary judge compares a new version with the stable one."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class JudgeSettings(BaseModel):
    """The behaviour judge of a rollout (``rollout.judge:``)."""

    model_config = ConfigDict(extra="forbid")
