"""The front-door benchmark's pieces: the credentials it makes are accepted by the
front door its config builds, and its wrk script sends the credential."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from bench._wrk import write_script
from bench.frontdoor import make_credentials, options_from

from agentkeel.config.layers import load_settings
from agentkeel.router.frontdoor import build_router_front_door
from agentkeel.secrets.resolver import SecretResolver


def test_the_bench_credentials_pass_the_front_door_it_configures(tmp_path: Path) -> None:
    """The API key and the JWT both authenticate, without I/O, against the config."""
    credentials = make_credentials(tmp_path / "identity")
    overrides = yaml.safe_load(credentials.config)
    overrides.update({"data_dir": str(tmp_path), "secrets_dir": None})
    settings = load_settings(layers=[], overrides=overrides).settings
    door = build_router_front_door(settings, secrets=SecretResolver(secrets_dir=None))
    assert door is not None
    by_key = door.authenticator.authenticate_now(f"Bearer {credentials.api_key}")
    by_token = door.authenticator.authenticate_now(f"Bearer {credentials.token}")
    assert by_key is not None and by_key.kind == "api_key"
    assert by_token is not None and (by_token.kind, by_token.user_id) == ("oidc", "bench")


def test_the_wrk_script_sends_the_given_headers(tmp_path: Path) -> None:
    script = write_script(tmp_path / "t.lua", ["s1"], headers={"Authorization": 'Bearer a"b'})
    text = script.read_text()
    assert '["Authorization"] = "Bearer a\\"b"' in text
    assert '["Content-Type"] = "application/json"' in text


def test_options_refuse_bad_values() -> None:
    import argparse

    args = argparse.Namespace(runs=0, duration=5, warmup=1, sessions=4, connections="1")
    with pytest.raises(SystemExit):
        options_from(args)
