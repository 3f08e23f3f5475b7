"""Fixtures for the router tests: a router factory on the test's event loop, its admin token."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agentkeel.config.router import RouterSettings
from agentkeel.router import RouterApp, create_router
from agentkeel.router.frontdoor import RouterFrontDoor

ADMIN_TOKEN = "router-admin-token-" + "t" * 24

StartRouter = Callable[..., Awaitable[RouterApp]]


@pytest.fixture
def admin_token_file(tmp_path: Path) -> Path:
    path = tmp_path / "router_admin_token"
    path.write_text(ADMIN_TOKEN + "\n")
    return path


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def start_router(tmp_path: Path, admin_token_file: Path) -> AsyncIterator[StartRouter]:
    """``await start_router(["v1=http://…"], **router_settings)``: a started router on a free
    port (pins in a SQLite file of this test unless ``pins`` is given), closed afterwards;
    ``front_door``, ``allow_request_keys`` and ``trust_trace_context`` go to
    ``create_router``."""
    started: list[RouterApp] = []

    async def start(
        backends: list[str],
        *,
        seed: int = 7,
        front_door: RouterFrontDoor | None = None,
        allow_request_keys: bool = False,
        trust_trace_context: bool = False,
        **options: Any,
    ) -> RouterApp:
        values: dict[str, Any] = {
            "port": 0,
            "backends": backends,
            "pins": f"sqlite:///{tmp_path / 'router.db'}",
            "admin_token_file": admin_token_file,
            "probe_interval_s": 0.1,
            "table_refresh_s": 0.1,
        }
        values.update(options)
        router = create_router(
            RouterSettings(**values),
            data_dir=tmp_path,
            registry=CollectorRegistry(),
            rng=random.Random(seed),
            front_door=front_door,
            allow_request_keys=allow_request_keys,
            trust_trace_context=trust_trace_context,
        )
        await router.start()
        started.append(router)
        return router

    yield start
    for router in started:
        await router.aclose(drain_timeout_s=0)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The router runs on uvloop in production (keel serve router), so its tests do too."""
    import uvloop

    return {"uvloop": uvloop.new_event_loop}
