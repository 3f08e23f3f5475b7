"""What the router's front-door tests share: an identity key pair, an API keys file, an
RSA issuer with its JWKS, the settings and front door over them, and a replica stand-in
that records the headers it got and answers turns as a test tells it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from agentkeel.config.layers import load_settings
from agentkeel.config.settings import KeelSettings
from agentkeel.identity.apikeys import ApiKeyStore
from agentkeel.identity.forwarded import build_front_door_verifier
from agentkeel.identity.keys import generate_key_pair
from agentkeel.identity.principal import Principal
from agentkeel.router.frontdoor import RouterFrontDoor, build_router_front_door
from agentkeel.secrets.resolver import SecretResolver
from tests.router.backends import RawBackend, Seen, write_json

ISSUER = "https://id.example.test/"
AUDIENCE = "agentkeel-tests"
KID = "test-rsa-1"

TurnAnswer = Callable[[Seen, asyncio.StreamWriter], Awaitable[bool]]


@dataclass
class Identity:
    """Keys and files of one test: the router's signing key, API keys, an OIDC issuer."""

    directory: Path
    signing_key_file: Path
    api_keys_file: Path
    jwks_file: Path
    rsa_key: rsa.RSAPrivateKey
    key: str  # the API key "ci": org acme, user ana

    def settings(
        self, *, jwks_url: str | None = None, redis_url: str | None = None, **auth: Any
    ) -> KeelSettings:
        """Settings with auth on over these files (limits in Redis with ``redis_url``);
        ``auth`` overrides go in the section."""
        oidc: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE}
        if jwks_url is not None:
            oidc["jwks_url"] = jwks_url
        else:
            oidc["jwks_file"] = str(self.jwks_file)
        section: dict[str, Any] = {
            "enabled": True,
            "api_keys_file": str(self.api_keys_file),
            "oidc": oidc,
        }
        section.update(auth)
        return load_settings(
            layers=[],
            overrides={
                "data_dir": str(self.directory),
                "secrets_dir": None,
                "redis_url": redis_url,
                "identity": {"signing_key_file": str(self.signing_key_file)},
                "auth": section,
            },
        ).settings

    def front_door(self, settings: KeelSettings) -> RouterFrontDoor:
        door = build_router_front_door(settings, secrets=SecretResolver(secrets_dir=None))
        assert door is not None
        return door

    def verify(self, settings: KeelSettings, assertion: str) -> Principal:
        """The principal in a front-door assertion, verified as a replica verifies it."""
        verifier = build_front_door_verifier(settings, secrets=SecretResolver(secrets_dir=None))
        assert verifier is not None
        return verifier.verify(assertion)

    def jwt(self, *, subject: str = "zoe", org: str = "acme", kid: str = KID) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "org": org,
            "scope": "chat sessions:read",
            "iat": now,
            "exp": now + 300,
        }
        return jwt.encode(claims, self.rsa_key, algorithm="RS256", headers={"kid": kid})

    def jwks(self) -> bytes:
        public = RSAAlgorithm.to_jwk(self.rsa_key.public_key(), as_dict=True)
        return json.dumps({"keys": [{**public, "kid": KID, "alg": "RS256", "use": "sig"}]}).encode()


def make_identity(directory: Path) -> Identity:
    directory.mkdir(parents=True, exist_ok=True)
    pair = generate_key_pair()
    signing = directory / "caller_signing_key"
    signing.write_text(pair.private_pem)
    signing.chmod(0o600)
    keys_file = directory / "api_keys.yaml"
    made = ApiKeyStore(keys_file).create(
        name="ci", organization="acme", user="ana", scopes=["chat", "sessions:read"]
    )
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    identity = Identity(
        directory=directory,
        signing_key_file=signing,
        api_keys_file=keys_file,
        jwks_file=directory / "jwks.json",
        rsa_key=rsa_key,
        key=made.key,
    )
    identity.jwks_file.write_bytes(identity.jwks())
    return identity


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


async def ok_turn(seen: Seen, writer: asyncio.StreamWriter) -> bool:
    await write_json(writer, 200, b'{"reply":"ok"}')
    return True


def session_replica(session_id: str = "s1", *, turn: TurnAnswer = ok_turn) -> RawBackend:
    """Creates ``session_id`` (version v1) on POST /v1/sessions, shows it on GET, and
    answers a turn with ``turn``; anything else 200."""

    async def respond(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.method == "POST" and seen.path == "/v1/sessions":
            await write_json(writer, 201, b'{"session_id":"%s"}' % session_id.encode())
        elif seen.method == "POST" and seen.path.endswith("/messages"):
            return await turn(seen, writer)
        elif seen.method == "GET" and seen.path == f"/v1/sessions/{session_id}":
            body = b'{"session_id":"%s","version":"v1","turns":[]}' % session_id.encode()
            await write_json(writer, 200, body)
        else:
            await write_json(writer, 200, b"{}")
        return True

    return RawBackend(respond)


class PathSpy:
    """Counts how the router's front door decided: from the parser callback (``now``,
    ``ADMITTED`` there means the fast path forwarded it) or awaiting (``awaited``)."""

    def __init__(self, door: RouterFrontDoor) -> None:
        self.now: list[int] = []
        self.awaited: list[int] = []
        admit_now, admit = door.admit_now, door.admit

        def spy_now(*args: Any, **kwargs: Any) -> int:
            status = admit_now(*args, **kwargs)
            self.now.append(status)
            return status

        async def spy(*args: Any, **kwargs: Any) -> int:
            status = await admit(*args, **kwargs)
            self.awaited.append(status)
            return status

        door.admit_now = spy_now  # type: ignore[method-assign]
        door.admit = spy  # type: ignore[method-assign]
