"""Build a memory server app for tests, with tokens files and a lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import yaml
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from agentkeel.config.memory import MemorySettings
from agentkeel.memory.app import create_app
from agentkeel.memory.store import MemoryStore
from agentkeel.resilience.clock import Clock

TOKEN_A = "token-a-" + "a" * 24
TOKEN_B = "token-b-" + "b" * 24
TOKEN_READER = "token-r-" + "r" * 24
ADMIN = "admin-" + "z" * 26


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def write_tokens(directory: Path) -> MemorySettings:
    tokens = directory / "tokens.yaml"
    tokens.write_text(
        yaml.safe_dump(
            {
                "tokens": {
                    TOKEN_A: {"name": "agent-a", "read": ["agent:a*"], "write": ["agent:a*"]},
                    TOKEN_B: {"name": "agent-b", "read": ["agent:b*"], "write": ["agent:b*"]},
                    TOKEN_READER: {"name": "reader", "read": ["agent:a*"]},
                }
            }
        )
    )
    admin = directory / "admin_token"
    admin.write_text(ADMIN + "\n")
    return MemorySettings(
        data_dir=directory / "data",
        secrets_dir=None,
        tokens_file=tokens,
        admin_token_file=admin,
        fence_retry_after_s=12,
    )


@asynccontextmanager
async def running_app(
    settings: MemorySettings, store: MemoryStore, clock: Clock
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    app = create_app(
        settings, store=store, clock=clock, registry=CollectorRegistry(), run_scheduler=False
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://memory") as client:
            yield app, client
