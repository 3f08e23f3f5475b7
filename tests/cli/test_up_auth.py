"""`keel up` with auth on: the router signs front-door assertions with the stack's caller
key, the replicas verify them with its public half, and `keel up` says where the keys
file is; with auth off it says plainly that it is off."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from agentkeel.cli.up import (
    ROUTER_SERVICE,
    auth_note,
    ensure_caller_key_pair,
    ensure_tool_credentials,
    plan_services,
)
from agentkeel.config import KeelSettings
from agentkeel.errors import ConfigError
from agentkeel.identity.forwarded import build_front_door_signer, build_front_door_verifier
from agentkeel.identity.principal import Principal
from agentkeel.secrets.resolver import SecretResolver


def settings_for(tmp_path: Path, **auth: object) -> KeelSettings:
    return KeelSettings.model_validate(
        {
            "data_dir": str(tmp_path / "data"),
            "secrets_dir": None,
            "up": {"base_port": 18081, "router": True, "memory": False, "tools": False},
            "router": {"port": 18080},
            "auth": auth,
        }
    )


def env_settings(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> KeelSettings:
    """The settings a child loads from the environment keel up gives it."""
    from agentkeel.config.layers import load_settings

    for name, value in env.items():
        if name.startswith("KEEL_"):
            monkeypatch.setenv(name, value)
    return load_settings().settings


def test_auth_on_wires_the_router_to_sign_and_the_replicas_to_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With auth.enabled every child gets KEEL_AUTH__ENABLED; the router the private key,
    the replicas the public one; an assertion the router's settings sign verifies with
    the replica's settings."""
    settings = settings_for(tmp_path, enabled=True)
    data = tmp_path / "data"
    keys = ensure_caller_key_pair(data)
    specs = {
        spec.name: spec
        for spec in plan_services(
            settings,
            config_path=None,
            start_local_model=False,
            admin_token_file=data / "admin_token",
            caller_keys=keys,
        )
    }
    router, replica = specs[ROUTER_SERVICE], specs["replica-1"]
    assert router.env["KEEL_AUTH__ENABLED"] == replica.env["KEEL_AUTH__ENABLED"] == "true"
    assert router.env["KEEL_IDENTITY__SIGNING_KEY_FILE"] == str(keys[0].absolute())
    assert replica.env["KEEL_IDENTITY__PUBLIC_KEY_FILE"] == str(keys[1].absolute())
    assert "KEEL_IDENTITY__PUBLIC_KEY_FILE" not in router.env
    resolver = SecretResolver(secrets_dir=None)
    with monkeypatch.context() as patch:
        signer = build_front_door_signer(env_settings(router.env, patch), secrets=resolver)
    with monkeypatch.context() as patch:
        replica_settings = env_settings(replica.env, patch)
        assert replica_settings.auth.enabled
        verifier = build_front_door_verifier(replica_settings, secrets=resolver)
    assert signer is not None and verifier is not None
    principal = Principal(
        kind="api_key",
        credential="api_key:ci",
        user_id="ana",
        organization="acme",
        scopes=frozenset({"chat"}),
    )
    assert verifier.verify(signer.sign(principal)) == principal


def test_the_key_pair_is_one_for_tools_and_the_front_door(tmp_path: Path) -> None:
    """The tool server's caller keys and the front door's are the same files, made once."""
    data = tmp_path / "data"
    keys = ensure_caller_key_pair(data)
    tools = ensure_tool_credentials(data)
    assert (tools.signing_key_file, tools.public_key_file) == keys
    assert ensure_caller_key_pair(data) == keys
    assert keys[0].stat().st_mode & 0o777 == 0o600


def test_auth_off_adds_nothing_and_auth_on_needs_the_keys(tmp_path: Path) -> None:
    """Auth off: no auth wiring at all. Auth on without the key pair: a ConfigError."""
    data = tmp_path / "data"
    for spec in plan_services(
        settings_for(tmp_path),
        config_path=None,
        start_local_model=False,
        admin_token_file=data / "admin_token",
    ):
        assert "KEEL_AUTH__ENABLED" not in spec.env
        assert "KEEL_IDENTITY__SIGNING_KEY_FILE" not in spec.env
    with pytest.raises(ConfigError, match="ensure_caller_key_pair"):
        plan_services(
            settings_for(tmp_path, enabled=True),
            config_path=None,
            start_local_model=False,
            admin_token_file=data / "admin_token",
        )


def test_keel_up_says_whether_auth_is_on(tmp_path: Path) -> None:
    """Off: says so and how to turn it on. On: where the keys file is, how to make a key."""
    off = auth_note(settings_for(tmp_path))
    assert "auth off" in off and "keel up --auth" in off
    on = auth_note(settings_for(tmp_path, enabled=True))
    assert str(tmp_path / "data" / "api_keys.yaml") in on
    assert "keel keys create" in on
