"""``SessionSettings``: when sessions end and how long their transcripts are kept (``sessions:``).

A session ends when it is deleted, when no turn has come for ``idle_timeout_s``,
or ``max_duration_s`` after it started. Every replica sweeps the shared store
every ``sweep_interval_s`` and records the ends it finds; transcripts of
sessions that ended more than ``retention_days`` ago are purged every
``purge_interval_s``, ``purge_batch`` sessions per transaction.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DAY_S = 86_400.0


class SessionSettings(BaseModel):
    """The session lifecycle: idle and maximum lifetimes, the sweeper, retention."""

    model_config = ConfigDict(extra="forbid")

    idle_timeout_s: float = Field(
        default=1800.0, ge=0, description="A session with no turn for this long ends; 0 = never."
    )
    max_duration_s: float = Field(
        default=DAY_S, ge=0, description="A session ends this long after it started; 0 = never."
    )
    retention_days: float = Field(
        default=30.0, gt=0, description="Transcripts of ended sessions are purged after this."
    )
    sweep_interval_s: float = Field(
        default=60.0, ge=0, description="How often each replica records ends; 0 = only lazily."
    )
    sweep_batch: int = Field(
        default=500, ge=1, le=10_000, description="Sessions ended per sweep statement."
    )
    sweep_grace_s: float = Field(
        default=300.0,
        ge=0,
        description="The sweeper leaves a session this much past its end to a turn in flight.",
    )
    purge_interval_s: float = Field(
        default=3600.0, ge=0, description="How often each replica purges; 0 = only by hand."
    )
    purge_batch: int = Field(
        default=500, ge=1, le=10_000, description="Sessions purged per transaction."
    )
    purge_pause_s: float = Field(
        default=0.05, ge=0, description="Pause between purge batches, so turns are not stalled."
    )
    live_refresh_s: float = Field(
        default=5.0,
        ge=0,
        description="A scrape of /metrics recounts live sessions when older than this.",
    )

    @property
    def retention_s(self) -> float:
        """``retention_days`` in seconds."""
        return self.retention_days * DAY_S
