"""``MemorySettings``: the memory server's section of the settings (``memory:``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RetentionSettings(BaseModel):
    """Which snapshots survive pruning (see ``snapshots.plan_retention``)."""

    model_config = ConfigDict(extra="forbid")

    keep_deploy: int = Field(default=1, ge=1, description="Newest deploy snapshots kept.")
    keep_daily_s: float = Field(
        default=86_400, gt=0, description="Keep the newest snapshot younger than this."
    )
    keep_weekly_s: float = Field(
        default=7 * 86_400, gt=0, description="Keep the newest snapshot of each week this long."
    )
    weekly_weeks: int = Field(default=4, ge=1, description="How many weekly snapshots to keep.")


class MemorySettings(BaseModel):
    """Everything the memory server needs. Secrets (tokens) come from files only."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8788, ge=0, le=65535)
    store_url: str | None = Field(
        default=None,
        description="sqlite:///path.db or postgresql://...; unset = memory.db in data_dir.",
    )
    pool_size: int = Field(default=10, ge=1)
    data_dir: Path = Field(
        default=Path(".keel/memory"), description="SQLite file (default store) and snapshots."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    secrets_dir: Path | None = Field(default=Path("/run/secrets"))
    tokens_file: Path | None = Field(
        default=None,
        description="YAML/JSON mapping token -> {read: [...], write: [...]}; unset = "
        "secrets_dir/<tokens_secret>.",
    )
    tokens_secret: str = "memory_tokens"
    admin_token_file: Path | None = None
    admin_token_secret: str = "memory_admin_token"
    max_search_limit: int = Field(default=100, ge=1, le=1000)
    fence_retry_after_s: float = Field(default=30.0, gt=0)
    integrity_interval_s: float = Field(
        default=3600.0, ge=0, description="Scheduled integrity check period; 0 turns it off."
    )
    snapshot_interval_s: float = Field(
        default=86_400.0, ge=0, description="Scheduled daily snapshot period; 0 turns it off."
    )
    verify_interval_s: float = Field(
        default=86_400.0, ge=0, description="Scheduled verify of the newest snapshot; 0 = off."
    )
    retention: RetentionSettings = Field(default_factory=RetentionSettings)

    def resolved_store_url(self) -> str:
        """The store URL, defaulting to a SQLite file in the data directory."""
        return self.store_url or f"sqlite:///{self.data_dir / 'memory.db'}"

    @property
    def snapshot_dir(self) -> Path:
        return self.data_dir / "snapshots"


class MemoryClientBreakerSettings(BaseModel):
    """The memory client's circuit breaker: quick to open, quick to probe again, so
    writes go to the outbox at once in an outage and flow again soon after it."""

    model_config = ConfigDict(extra="forbid")

    failure_threshold: int = Field(default=3, ge=1)
    failure_window_s: float = Field(default=30.0, gt=0)
    latency_threshold_s: float = Field(default=5.0, gt=0)
    latency_window: int = Field(default=20, ge=1)
    min_latency_samples: int = Field(default=5, ge=1)
    open_s: float = Field(default=3.0, gt=0, description="How long it stays open before a probe.")


class MemoryClientSettings(BaseModel):
    """How agents (``turn.memory``) and the tool server reach the memory server.

    The bearer token comes from ``token_file`` or ``secrets_dir/<token_secret>``,
    never from a settings value. Writes made while the server is down wait in a
    SQLite outbox, one file per client under ``outbox_dir``.
    """

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        default=None,
        description="The memory server for turn.memory, e.g. http://127.0.0.1:8788; unset = "
        "agents get no memory handle.",
    )
    token_file: Path | None = Field(default=None, description="File that holds the bearer token.")
    token_secret: str = Field(
        default="memory_token", description="Name of the token's file inside secrets_dir."
    )
    timeout_s: float = Field(default=5.0, gt=0, description="Per request, read and write.")
    connect_timeout_s: float = Field(default=2.0, gt=0)
    outbox_dir: Path | None = Field(
        default=None, description="Where outbox files live; unset = <data_dir>/memory-outbox."
    )
    retry_initial_s: float = Field(
        default=0.5, gt=0, description="First wait before the outbox retries a delivery."
    )
    retry_max_s: float = Field(default=10.0, gt=0, description="Longest wait between retries.")
    breaker: MemoryClientBreakerSettings = Field(default_factory=MemoryClientBreakerSettings)
