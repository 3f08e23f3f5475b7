"""The ``identity`` settings section: signed caller assertions between services.

A replica signs one short-lived assertion per tool call with the private key;
the tool server verifies it with the public key. Both keys come from files
(or the secrets directory), never from settings values.

    identity:
      issuer: agentkeel
      ttl_s: 30
      signing_key_file: .keel/caller_signing_key      # replicas
      public_key_file: .keel/caller_signing_key.pub   # the tool server
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class IdentitySettings(BaseModel):
    """Who signs caller assertions, how long they live, and where the keys are."""

    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(
        default="agentkeel",
        min_length=1,
        description="The iss claim replicas write and services require.",
    )
    ttl_s: float = Field(
        default=30.0, gt=0, le=60, description="Lifetime of one assertion (at most a minute)."
    )
    leeway_s: float = Field(
        default=5.0, ge=0, le=30, description="Clock skew tolerated when checking exp and iat."
    )
    signing_key_file: Path | None = Field(
        default=None,
        description="Ed25519 private key (PEM) replicas sign with; unset = "
        "secrets_dir/<signing_key_secret>.",
    )
    signing_key_secret: str = "caller_signing_key"
    public_key_file: Path | None = Field(
        default=None,
        description="Ed25519 public key (PEM) services verify with; unset = "
        "secrets_dir/<public_key_secret>.",
    )
    public_key_secret: str = "caller_public_key"
