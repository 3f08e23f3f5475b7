"""The ``secrets`` settings section: where secrets live and how model keys are chosen.

The top-level ``secrets_dir`` stays the root of the ``files`` source. The Vault
token itself is never a settings value: it is read from ``vault.token_file``
(token auth) or obtained by logging in with the pod's service-account JWT
(Kubernetes auth).

    secrets:
      source: vault            # files (secrets_dir) | vault
      cache_ttl_s: 30
      vault:
        url: https://vault.internal:8200
        mount: secret
        prefix: agentkeel
        auth: kubernetes       # token | kubernetes
        role: agentkeel
      key_chain:
        allow_request_keys: false
        byok_fallthrough: false
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VaultSettings(_Section):
    """HashiCorp Vault (or OpenBao) KV version 2, through hvac."""

    url: str = Field(default="http://127.0.0.1:8200", description="Vault's address.")
    mount: str = Field(default="secret", min_length=1, description="The KV v2 mount point.")
    prefix: str = Field(
        default="agentkeel", description="Folder under the mount that holds agentkeel's paths."
    )
    auth: Literal["token", "kubernetes"] = "token"
    token_file: Path | None = Field(
        default=None, description="auth: token: the file that holds the Vault token."
    )
    role: str | None = Field(default=None, description="auth: kubernetes: the Vault role.")
    jwt_file: Path = Field(
        default=Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        description="auth: kubernetes: the service-account token presented at login.",
    )
    auth_mount: str = Field(default="kubernetes", description="Where the auth method is mounted.")
    namespace: str | None = Field(default=None, description="Vault Enterprise namespace.")
    timeout_s: float = Field(default=5.0, gt=0)
    ca_file: Path | None = Field(
        default=None, description="CA bundle that signed Vault's TLS certificate."
    )


class RotationSettings(_Section):
    """Dual-key rotation: when a key is due, and how long both versions stay accepted."""

    due_days: float = Field(default=90, gt=0, description="A key older than this is due.")
    deadline_s: float = Field(
        default=86400, gt=0, description="How long the old version stays after activation."
    )


class KeyChainSettings(_Section):
    """For each model call: the user's own key (BYOK), else the organization's, else
    the platform's (the provider's ``api_key_file``/``api_key_secret``)."""

    allow_request_keys: bool = Field(
        default=False,
        description="Accept a user's key sent with the request (x-keel-provider-key).",
    )
    byok_fallthrough: bool = Field(
        default=False,
        description="When the provider rejects a user's own key, go on down the chain "
        "(organization, platform key, next provider) instead of failing the call.",
    )
    byok_path: str = Field(
        default="byok/{user}/{provider}", description="Where a user's own key is stored."
    )
    org_path: str = Field(
        default="orgs/{org}/{provider}", description="Where an organization's key is stored."
    )


class SecretsSettings(_Section):
    """Which secret source to read, how long reads are cached, rotation and the key chain."""

    source: Literal["files", "vault"] = Field(
        default="files", description="files: secrets_dir; vault: secrets.vault."
    )
    cache_ttl_s: float = Field(default=30.0, ge=0, description="How long a read is reused.")
    vault: VaultSettings = Field(default_factory=VaultSettings)
    rotation: RotationSettings = Field(default_factory=RotationSettings)
    key_chain: KeyChainSettings = Field(default_factory=KeyChainSettings)
