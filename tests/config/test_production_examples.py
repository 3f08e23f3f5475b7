"""Every production configuration the project ships turns auth on and holds no secret."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from agentkeel.config.layers import load_settings

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_CONFIGS = sorted(
    [
        *ROOT.glob("examples/**/*production*.yaml"),
        *ROOT.glob("src/agentkeel/assets/**/*production*.yaml"),
    ]
)
# A URL with a password, or a value shaped like a provider key or a bearer token.
_SECRET_SHAPED = re.compile(
    r"://[^/\s:@]+:[^@\s]+@|\bsk-[A-Za-z0-9_-]{12,}|\bak_[A-Za-z0-9_-]{12,}"
)


def test_there_is_a_production_example() -> None:
    assert PRODUCTION_CONFIGS, "examples/keel.production.yaml is missing"


@pytest.mark.parametrize("path", PRODUCTION_CONFIGS, ids=lambda p: p.name)
def test_a_production_config_loads_with_auth_on(path: Path) -> None:
    settings = load_settings(config_path=path, environ={}).settings
    assert settings.auth.enabled, f"{path.name}: auth.enabled must be true in production"
    assert settings.server.admin_token_file is not None


@pytest.mark.parametrize("path", PRODUCTION_CONFIGS, ids=lambda p: p.name)
def test_a_production_config_holds_no_secret_value(path: Path) -> None:
    text = path.read_text()
    assert not _SECRET_SHAPED.search(text)
    keys = _keys(yaml.safe_load(text))
    assert not [k for k in keys if k.endswith(("api_key", "token", "password"))]


def _keys(node: object, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        out = []
        for key, value in node.items():
            out += [f"{prefix}{key}", *_keys(value, f"{prefix}{key}.")]
        return out
    if isinstance(node, list):
        return [k for item in node for k in _keys(item, prefix)]
    return []
