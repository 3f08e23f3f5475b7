"""``QuotaSettings`` (``quotas:``) and the price table (``pricing:``).

Token quotas hold every model call of a user, and of the user's organization,
to a number of tokens per UTC day and per UTC month (0 = no quota). Tokens are
reserved before each call (an upper bound for any text) and settled with the
provider's figures after, in a ledger every replica shares: the session store
(SQLite / PostgreSQL) or Redis. A call that would pass a quota is a 429
``quota_exhausted`` whose ``Retry-After`` is the time until the window resets.

The price table turns usage into spend: per model, dollars per million input
and per million output tokens. A call made with the user's own key (BYOK)
counts toward the user's usage and quotas, never toward the platform's spend.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class QuotaSettings(BaseModel):
    """Per-user and per-organization token quotas, per UTC day and month; 0 = none."""

    model_config = ConfigDict(extra="forbid")

    user_daily_tokens: int = Field(
        default=2_000_000, ge=0, description="Tokens a user may use per UTC day; 0 = no quota."
    )
    user_monthly_tokens: int = Field(
        default=0, ge=0, description="Tokens a user may use per UTC month; 0 = no quota."
    )
    org_daily_tokens: int = Field(
        default=0,
        ge=0,
        description="Tokens all users of one organization may use per UTC day; 0 = no quota.",
    )
    org_monthly_tokens: int = Field(
        default=0,
        ge=0,
        description="Tokens all users of one organization may use per UTC month; 0 = no quota.",
    )
    ledger: Literal["auto", "store", "redis"] = Field(
        default="auto",
        description="Where replicas share reservations: the session store, or Redis "
        "(redis_url); auto = Redis when redis_url is set, else the store.",
    )
    redis_prefix: str = Field(
        default="agentkeel:budget:",
        min_length=1,
        description="ledger redis: what every budget key starts with (on Redis Cluster, "
        "give it a hash tag, e.g. '{agentkeel}:budget:', so a call's keys share a slot).",
    )


class ModelPrice(BaseModel):
    """What one model costs, in dollars per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input_per_million: float = Field(ge=0, description="Dollars per million input tokens.")
    output_per_million: float = Field(ge=0, description="Dollars per million output tokens.")

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Dollars for one call.

        >>> ModelPrice(input_per_million=2.5, output_per_million=10).cost(1000, 500)
        0.0075
        """
        return (input_tokens * self.input_per_million + output_tokens * self.output_per_million) / (
            1_000_000
        )
