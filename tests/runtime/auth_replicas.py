"""Agent replicas with authentication on, for the ownership tests.

``AuthStack`` is one directory holding what replicas of one deployment share: the
API keys file, the identity key pair (the router's signing key; replicas verify
with its public half) and the SQLite session store. ``start_replica`` builds a
real agent server over it (scripted model, in-process ASGI transport).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from agentkeel.config.layers import load_settings
from agentkeel.config.settings import KeelSettings
from agentkeel.identity.apikeys import ApiKeyStore
from agentkeel.identity.forwarded import FrontDoorSigner, build_front_door_signer
from agentkeel.identity.keys import generate_key_pair
from agentkeel.identity.principal import CALLER_HEADER, Principal
from agentkeel.models.gateway import ModelGateway
from agentkeel.models.scripted import ScriptedProvider
from agentkeel.resilience.clock import ManualClock
from agentkeel.runtime.app import create_app
from agentkeel.runtime.types import Agent
from agentkeel.secrets.resolver import SecretResolver
from agentkeel.telemetry.metrics import ModelMetrics


@dataclass(frozen=True)
class Key:
    """An API key made for a test, with the principal it stands for."""

    key: str
    principal: Principal

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class AuthStack:
    directory: Path
    keys: dict[str, Key] = field(default_factory=dict)

    @property
    def keys_file(self) -> Path:
        return self.directory / "api_keys.yaml"

    @property
    def signing_key(self) -> Path:
        return self.directory / "caller_signing_key"

    def settings(self, **overrides: Any) -> KeelSettings:
        """Replica settings: auth on, the stack's keys, identity key and store."""
        auth = {"enabled": True, "api_keys_file": str(self.keys_file), **overrides.pop("auth", {})}
        return load_settings(
            layers=[],
            overrides={
                "data_dir": str(self.directory),
                "secrets_dir": None,
                "store": {"url": f"sqlite:///{self.directory / 'sessions.db'}"},
                "models": [{"name": "scripted", "kind": "scripted"}],
                "identity": {"signing_key_file": str(self.signing_key)},
                "auth": auth,
                **overrides,
            },
        ).settings

    def add_key(
        self,
        name: str,
        *,
        organization: str | None,
        user: str | None = None,
        scopes: Sequence[str] = ("chat", "sessions:read"),
    ) -> Key:
        made = ApiKeyStore(self.keys_file).create(
            name=name, organization=organization, user=user, scopes=scopes
        )
        key = Key(key=made.key, principal=made.record.principal())
        self.keys[name] = key
        return key

    def signer(self) -> FrontDoorSigner:
        """The router's signer: makes the front-door assertions replicas verify."""
        signer = build_front_door_signer(self.settings(), secrets=SecretResolver(secrets_dir=None))
        assert signer is not None
        return signer

    def forwarded(self, principal: Principal) -> dict[str, str]:
        """Headers of a request the router forwards for ``principal``."""
        return {CALLER_HEADER: self.signer().sign(principal)}


def make_auth_stack(directory: Path) -> AuthStack:
    directory.mkdir(parents=True, exist_ok=True)
    pair = generate_key_pair()
    stack = AuthStack(directory=directory)
    stack.signing_key.write_text(pair.private_pem)
    stack.signing_key.chmod(0o600)
    return stack


@dataclass
class Replica:
    app: Starlette
    client: httpx.AsyncClient
    settings: KeelSettings


async def start_replica(
    exits: AsyncExitStack,
    settings: KeelSettings,
    *,
    agent: Agent | None = None,
    name: str = "replica",
) -> Replica:
    """A running agent server on ``settings`` with a scripted model that echoes; it opens
    its own store object (replicas sharing a SQLite file share the sessions)."""
    clock = ManualClock(wall_start=1_700_000_000.0)
    registry = CollectorRegistry()
    gateway = ModelGateway(
        providers=[ScriptedProvider(script=(), clock=clock, on_end="echo")],
        breakers={},
        retry=settings.retry,
        metrics=ModelMetrics(registry, version=settings.agent.version),
        clock=clock,
    )
    app = create_app(
        settings,
        agent=agent,
        gateway=gateway,
        clock=clock,
        registry=registry,
        run_sweeper=False,
    )
    await exits.enter_async_context(app.router.lifespan_context(app))
    client = await exits.enter_async_context(
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}")
    )
    return Replica(app=app, client=client, settings=settings)
