"""``router:`` settings: backends as VERSION=URL, from keel.yaml or the environment."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from agentkeel.config.layers import load_settings
from agentkeel.config.router import RouterSettings
from agentkeel.errors import ConfigError


def test_backends_parse_in_order() -> None:
    """VERSION=URL pairs, trailing slash dropped, in the order given."""
    settings = RouterSettings(backends=["v1=http://127.0.0.1:8081/", "v2=http://127.0.0.1:8083"])
    assert [(b.version, b.url) for b in settings.backend_list()] == [
        ("v1", "http://127.0.0.1:8081"),
        ("v2", "http://127.0.0.1:8083"),
    ]


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ("http://127.0.0.1:8081", "VERSION=http"),
        ("v1=", "VERSION=http"),
        ("v1=https://h:1", "plain HTTP"),
        ("v1=http://h:1/api", "HOST:PORT"),
        ("v1=http://h:port", "invalid port"),
    ],
)
def test_bad_backends_name_the_form(backend: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RouterSettings(backends=[backend])


def test_a_replica_in_two_versions_is_refused() -> None:
    with pytest.raises(ValidationError, match="a replica serves one version"):
        RouterSettings(backends=["v1=http://h:1", "v2=http://h:1"])


def test_the_environment_sets_the_router_section() -> None:
    """KEEL_ROUTER__BACKENDS as JSON and KEEL_ROUTER__PINS, as keel up would pass them; a bad
    value is a ConfigError naming the key."""
    env = {
        "KEEL_ROUTER__BACKENDS": json.dumps(["v1=http://127.0.0.1:8081"]),
        "KEEL_ROUTER__PINS": "redis://127.0.0.1:6379/0",
    }
    router = load_settings(environ=env).settings.router
    assert router.backends == ["v1=http://127.0.0.1:8081"] and router.pins.startswith("redis")  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"router\.backends"):
        load_settings(environ={"KEEL_ROUTER__BACKENDS": '["nope"]'})
