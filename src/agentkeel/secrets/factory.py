"""Builds the process's secret source from settings: ``build_secret_source``."""

from __future__ import annotations

from pathlib import Path

from agentkeel.config.settings import KeelSettings
from agentkeel.errors import ConfigError
from agentkeel.resilience.clock import Clock, SystemClock
from agentkeel.secrets.cache import CachedSecretSource
from agentkeel.secrets.files import FileSecretSource
from agentkeel.secrets.known import KnownSecrets
from agentkeel.secrets.source import SecretSource


def build_secret_source(
    settings: KeelSettings, known: KnownSecrets | None = None, *, clock: Clock | None = None
) -> CachedSecretSource:
    """``secrets.source`` (files under ``secrets_dir``, or Vault) behind a cache.

    >>> source = build_secret_source(settings, known)
    >>> source.require("orgs/acme/openai")
    """
    config = settings.secrets
    inner: SecretSource
    if config.source == "vault":
        from agentkeel.secrets.vault import VaultSecretSource  # hvac only when used

        inner = VaultSecretSource(settings=config.vault, known=known)
    else:
        if settings.secrets_dir is None:
            raise ConfigError(
                "secrets.source is 'files' but secrets_dir is unset; set secrets_dir to the "
                "directory of secret files (or secrets.source: vault)."
            )
        inner = FileSecretSource(root=Path(settings.secrets_dir), known=known)
    return CachedSecretSource(
        inner=inner, ttl_s=config.cache_ttl_s, clock=clock or SystemClock(), known=known
    )


def process_secret_source(
    settings: KeelSettings, known: KnownSecrets | None
) -> CachedSecretSource | None:
    """The process's secret source (``secrets.source``); ``None`` for the files source
    without a ``secrets_dir``. One per process: the key chain, the admin token and the
    secrets report share its cache, so a refresh reaches all of them."""
    if settings.secrets.source == "vault" or settings.secrets_dir is not None:
        return build_secret_source(settings, known)
    return None
