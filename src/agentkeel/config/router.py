"""``RouterSettings``: the session-aware router (``router:``; ``keel serve router``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RouterSettings(BaseModel):
    """The router in front of the agent replicas."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
