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
