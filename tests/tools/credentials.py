"""Test helpers: a tool server's tokens file, a caller key pair and signed assertions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx2
import mcp_types as mcp
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from agentkeel.config.settings import KeelSettings
from agentkeel.identity import generate_key_pair, sign_caller_assertion
from agentkeel.tools.server import CALLER_META_KEY

TOKEN = "replicas-token-" + "r" * 24
"""Granted every tool."""
LIMITED = "notebook-token-" + "n" * 24
"""Granted calculator and whoami only."""
AUDIENCE = "agentkeel-tools"
ISSUER = "agentkeel"


@dataclass(frozen=True)
class Credentials:
    directory: Path
    tokens_file: Path
    signing_key_file: Path
    public_key_file: Path
    private_pem: str
    public_pem: str

    @property
    def key(self) -> Ed25519PrivateKey:
        key = load_pem_private_key(self.private_pem.encode(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        return key


def write_credentials(directory: Path) -> Credentials:
    """A tokens file granting TOKEN every tool and LIMITED two, and a key pair."""
    directory.mkdir(parents=True, exist_ok=True)
    tokens = directory / "tools_tokens.yaml"
    tokens.write_text(
        yaml.safe_dump(
            {
                "tokens": {
                    TOKEN: {"name": "replicas", "tools": ["*"]},
                    LIMITED: {"name": "notebook", "tools": ["calculator", "whoami"]},
                }
            }
        )
    )
    pair = generate_key_pair()
    private = directory / "caller_signing_key"
    private.write_text(pair.private_pem)
    public = directory / "caller_signing_key.pub"
    public.write_text(pair.public_pem)
    return Credentials(directory, tokens, private, public, pair.private_pem, pair.public_pem)


def server_settings(credentials: Credentials | None, **server: Any) -> KeelSettings:
    """Tool server settings over ``credentials`` (no tokens and no key when ``None``)."""
    if credentials is None:
        return KeelSettings(secrets_dir=None, tools={"server": server})
    return KeelSettings(
        secrets_dir=None,
        tools={"server": {"tokens_file": credentials.tokens_file, **server}},
        identity={"public_key_file": credentials.public_key_file},
    )


def bearer(token: str, **headers: str) -> httpx2.AsyncClient:
    """An HTTP client for the MCP SDK's transport that sends ``token``."""
    return httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}", **headers})


def caller(
    key: Ed25519PrivateKey,
    *,
    tool: str,
    user: str,
    agent: str = "support",
    session: str = "s1",
    turn: int = 1,
    audience: str = AUDIENCE,
    now: float | None = None,
    ttl_s: float = 30.0,
    organization: str | None = None,
) -> mcp.RequestParamsMeta:
    """``_meta`` with a caller assertion, as a replica signs it."""
    token = sign_caller_assertion(
        key,
        issuer=ISSUER,
        audience=audience,
        tool=tool,
        agent_id=agent,
        user_id=user,
        session_id=session,
        turn=turn,
        now=now,
        ttl_s=ttl_s,
        organization=organization,
    )
    return cast(mcp.RequestParamsMeta, {CALLER_META_KEY: token})


def assertion_in(meta: mcp.RequestParamsMeta) -> str:
    """The caller assertion a ``caller(...)`` meta carries."""
    return str(cast(dict[str, Any], meta)[CALLER_META_KEY])
