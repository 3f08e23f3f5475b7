"""The BYOK → organization → platform key chain, end to end through the gateway and the
openai SDK against the OpenAI stand-in, which checks the bearer key of every call."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from agentkeel.config.settings import KeelSettings
from agentkeel.errors import Forbidden, ModelUnavailable
from agentkeel.models.factory import build_gateway
from agentkeel.models.gateway import ModelGateway
from agentkeel.models.types import ChatMessage, ModelRequest
from agentkeel.resilience.clock import ManualClock
from agentkeel.secrets import CallContext, FileSecretSource, SecretResolver, SecretVersion
from agentkeel.secrets.call_context import call_context
from agentkeel.telemetry.metrics import ModelMetrics
from agentkeel.testing.openai_standin import DEFAULT_REPLY, OpenAIStandin

PLATFORM = "sk-platform-0123456789"
ORG = "sk-org-acme-0123456789"
BYOK = "sk-byok-ana-0123456789"
SENT = "sk-sent-ana-0123456789"
REQUEST = ModelRequest(messages=[ChatMessage(role="user", content="hi")])


@pytest.fixture
def standin() -> Iterator[OpenAIStandin]:
    with OpenAIStandin(keys={PLATFORM, ORG, BYOK, SENT}).serving() as server:
        yield server


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    root = tmp_path / "secrets"
    for path, value in {
        "openai_platform": PLATFORM,
        "orgs/acme/openai": ORG,
        "byok-org/acme/ana/openai": BYOK,
    }.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(value)
    return root


def gateway_for(
    standin: OpenAIStandin, secrets_dir: Path, *, backup: bool = False, **key_chain: Any
) -> tuple[ModelGateway, CollectorRegistry]:
    models: list[dict[str, Any]] = [
        {
            "name": "openai",
            "kind": "openai",
            "model": "m",
            "base_url": standin.base_url,
            "api_key_secret": "openai_platform",
        },
    ]
    if backup:
        models.append(
            {
                "name": "backup",
                "kind": "openai",
                "model": "m",
                "base_url": standin.base_url,
                "api_key_secret": "openai_platform",
            }
        )
    settings = KeelSettings.model_validate(
        {
            "secrets_dir": str(secrets_dir),
            "models": models,
            "retry": {"max_attempts": 1},
            "secrets": {"key_chain": key_chain},
        }
    )
    registry = CollectorRegistry()
    gateway = build_gateway(
        settings,
        metrics=ModelMetrics(registry),
        clock=ManualClock(),
        secrets=SecretResolver(secrets_dir=secrets_dir),
    )
    return gateway, registry


def served(registry: CollectorRegistry, link: str, provider: str = "openai") -> float:
    value = registry.get_sample_value(
        "agent_model_key_link_total", {"provider": provider, "link": link}
    )
    return value or 0.0


def ctx(user: str, org: str | None = None, started: float = 0.0, **keys: str) -> CallContext:
    return CallContext(
        user_id=user,
        organization=org,
        session_started_at=started,
        request_keys={p: SecretStr(k) for p, k in keys.items()},
    )


async def test_each_link_serves_a_call_and_is_counted(
    standin: OpenAIStandin, secrets_dir: Path
) -> None:
    """Outside a turn: the platform key; a user of acme without a key: acme's; ana, who
    has her own: hers (streaming too). Each call is counted under its link."""
    gateway, registry = gateway_for(standin, secrets_dir)
    reply = await gateway.complete(REQUEST)
    assert reply.content == DEFAULT_REPLY
    with call_context(ctx("bob", "acme")):
        await gateway.complete(REQUEST)
    with call_context(ctx("ana", "acme")):
        tokens: list[str] = []

        async def on_token(text: str) -> None:
            tokens.append(text)

        streamed = await gateway.complete(REQUEST, on_token=on_token)
    assert "".join(tokens) == streamed.content == DEFAULT_REPLY
    with call_context(ctx("carl")):  # no organization, no own key
        await gateway.complete(REQUEST)
    assert standin.calls_by_key == {PLATFORM: 2, ORG: 1, BYOK: 1}
    assert (served(registry, "platform"), served(registry, "org"), served(registry, "byok")) == (
        2.0,
        1.0,
        1.0,
    )
    await gateway.aclose()


async def test_the_response_names_the_link_that_served_it(
    standin: OpenAIStandin, secrets_dir: Path
) -> None:
    """Each response carries the key chain link that served it (what usage and spend
    read), streamed or not; with byok_fallthrough, the link that finally served."""
    gateway, _ = gateway_for(standin, secrets_dir)
    links = [(await gateway.complete(REQUEST)).key_link]
    for user, org in (("bob", "acme"), ("ana", "acme")):
        with call_context(ctx(user, org)):
            links.append((await gateway.complete(REQUEST)).key_link)

    async def ignore(text: str) -> None:
        return None

    with call_context(ctx("ana", "acme")):
        links.append((await gateway.complete(REQUEST, on_token=ignore)).key_link)
    assert links == ["platform", "org", "byok", "byok"]
    await gateway.aclose()
    falling, _ = gateway_for(standin, secrets_dir, byok_fallthrough=True)
    standin.revoke(BYOK)
    with call_context(ctx("ana", "acme")):
        assert (await falling.complete(REQUEST)).key_link == "org"
    await falling.aclose()


async def test_a_users_own_key_belongs_to_their_organization(
    standin: OpenAIStandin, secrets_dir: Path
) -> None:
    """acme's ana has her own key; ana of globex, and an ana with no organization, are
    other people: their calls use the platform key, never acme ana's."""
    gateway, _ = gateway_for(standin, secrets_dir)
    with call_context(ctx("ana", "globex")):
        await gateway.complete(REQUEST)
    with call_context(ctx("ana")):
        await gateway.complete(REQUEST)
    assert standin.calls_by_key == {PLATFORM: 2}
    await gateway.aclose()


async def test_a_revoked_own_key_fails_clearly_without_a_platform_call(
    standin: OpenAIStandin, secrets_dir: Path
) -> None:
    """The provider refuses ana's key: her call is a 403 byok_rejected naming the provider;
    no call is made with the platform key or to the backup provider."""
    gateway, registry = gateway_for(standin, secrets_dir, backup=True)
    standin.revoke(BYOK)
    with call_context(ctx("ana", "acme")), pytest.raises(Forbidden) as caught:
        await gateway.complete(REQUEST)
    assert caught.value.code == "byok_rejected" and caught.value.status == 403
    assert "'openai'" in caught.value.message and "platform key" in caught.value.message
    assert BYOK not in caught.value.message
    assert standin.calls_by_key == {}
    assert standin.rejected_by_key == {BYOK: 1}
    assert served(registry, "platform", "backup") == 0.0
    # The breaker did not count the user's bad key against the provider.
    assert gateway.breaker_states() == {"openai": "closed", "backup": "closed"}
    await gateway.aclose()


async def test_byok_fallthrough_goes_on_down_the_chain(
    standin: OpenAIStandin, secrets_dir: Path
) -> None:
    """With byok_fallthrough, a refused own key is followed by the organization's."""
    gateway, registry = gateway_for(standin, secrets_dir, byok_fallthrough=True)
    standin.revoke(BYOK)
    with call_context(ctx("ana", "acme")):
        await gateway.complete(REQUEST)
    assert standin.calls_by_key == {ORG: 1}
    assert served(registry, "org") == 1.0 and served(registry, "byok") == 0.0
    await gateway.aclose()


async def test_a_rejected_platform_key_falls_back_as_before(
    standin: OpenAIStandin, secrets_dir: Path
) -> None:
    """Not a user's key: a 401 is a provider failure, the call moves on (here: none left)."""
    gateway, _ = gateway_for(standin, secrets_dir)
    standin.revoke(PLATFORM)
    with pytest.raises(ModelUnavailable):
        await gateway.complete(REQUEST)
    await gateway.aclose()


async def test_request_keys_only_when_allowed(standin: OpenAIStandin, secrets_dir: Path) -> None:
    """A key sent with the request is used when allow_request_keys is on, ignored when off."""
    refused, _ = gateway_for(standin, secrets_dir)
    with call_context(ctx("zoe", "acme", openai=SENT)):
        await refused.complete(REQUEST)
    assert standin.calls_by_key == {ORG: 1}
    allowed, registry = gateway_for(standin, secrets_dir, allow_request_keys=True)
    with call_context(ctx("ana", "acme", openai=SENT)):
        await allowed.complete(REQUEST)
    assert standin.calls_by_key == {ORG: 1, SENT: 1}
    assert served(registry, "byok") == 1.0
    await refused.aclose()
    await allowed.aclose()


async def test_a_session_keeps_the_platform_key_version_it_started_with(
    standin: OpenAIStandin, secrets_dir: Path
) -> None:
    """During a rotation the session's start picks the platform key version."""
    new = "sk-platform-new-0123456789"
    standin.accept(new)
    FileSecretSource(root=secrets_dir).write(
        "openai_platform",
        [
            SecretVersion(SecretStr(new), 2, created_at=500.0, activated_at=1000.0),
            SecretVersion(SecretStr(PLATFORM), 1, created_at=100.0, activated_at=100.0),
        ],
    )
    os.remove(secrets_dir / "orgs/acme/openai")
    gateway, _ = gateway_for(standin, secrets_dir)
    with call_context(ctx("old-session", started=900.0)):
        await gateway.complete(REQUEST)
    with call_context(ctx("new-session", started=1100.0)):
        await gateway.complete(REQUEST)
    assert standin.calls_by_key == {PLATFORM: 1, new: 1}
    await gateway.aclose()
