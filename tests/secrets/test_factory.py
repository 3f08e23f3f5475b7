from __future__ import annotations

from pathlib import Path

import pytest

from agentkeel.config.settings import KeelSettings
from agentkeel.errors import ConfigError
from agentkeel.secrets.factory import build_secret_source
from agentkeel.secrets.files import FileSecretSource
from agentkeel.secrets.vault import VaultSecretSource


def test_files_by_default_over_secrets_dir(tmp_path: Path) -> None:
    """The default source is the files under secrets_dir, cached for cache_ttl_s."""
    source = build_secret_source(KeelSettings(secrets_dir=tmp_path))
    assert isinstance(source.inner, FileSecretSource) and source.inner.root == tmp_path
    assert source.ttl_s == 30


def test_vault_from_settings(tmp_path: Path) -> None:
    """secrets.source: vault builds the hvac source with its settings."""
    settings = KeelSettings.model_validate(
        {
            "secrets": {
                "source": "vault",
                "cache_ttl_s": 5,
                "vault": {"url": "http://vault:8200", "token_file": str(tmp_path / "t")},
            }
        }
    )
    source = build_secret_source(settings)
    assert isinstance(source.inner, VaultSecretSource) and source.kind == "vault"
    assert source.ttl_s == 5


def test_files_without_a_secrets_dir_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="secrets_dir"):
        build_secret_source(KeelSettings(secrets_dir=None))
