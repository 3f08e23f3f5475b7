"""OIDC bearer tokens with real key pairs and a JWKS served over a real socket."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from agentkeel.config.auth import OidcSettings
from agentkeel.errors import Unauthorized
from agentkeel.identity.oidc import OidcVerifier

ISSUER = "https://id.example.test/"
AUDIENCE = "agentkeel"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Jwks:
    """A JWKS document served on a free loopback port; counts its fetches."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    url: str = ""


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    served = Jwks()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.fetches += 1
            body = json.dumps({"keys": served.keys}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield served
    server.shutdown()
    server.server_close()


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = Ed25519PrivateKey.generate()


def jwk(key: Any, kid: str) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(key, rsa.RSAPrivateKey):
        data = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**data, "kid": kid, "use": "sig"}


def token(key: Any, *, kid: str = "rsa1", alg: str = "RS256", now: float, **claims: Any) -> str:
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "ana",
        "org": "acme",
        "scope": "openid chat",
        "iat": int(now),
        "exp": int(now) + 300,
        **claims,
    }
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def verifier(url: str, clock: Clock, **settings: Any) -> OidcVerifier:
    return OidcVerifier(
        OidcSettings(issuer=ISSUER, audience=AUDIENCE, jwks_url=url, **settings), clock=clock
    )


async def refused(v: OidcVerifier, tok: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as caught:
        await v.verify(tok)
    assert tok not in caught.value.message
    return caught.value


async def test_good_tokens_with_rsa_ec_and_ed25519_keys(jwks: Jwks) -> None:
    """Tokens signed by RS256, ES256 and EdDSA keys in the JWKS verify into principals with
    the user, org and scopes (only ours kept); sync verification works once keys are cached."""
    clock = Clock()
    jwks.keys = [jwk(RSA_KEY, "rsa1"), jwk(EC_KEY, "ec1"), jwk(ED_KEY, "ed1")]
    v = verifier(jwks.url, clock)
    try:
        rs = token(RSA_KEY, now=clock.now)
        assert v.verify_now(rs) is None  # no keys yet: needs the fetch
        principal = await v.verify(rs)
        assert principal.kind == "oidc" and principal.credential == "oidc:ana"
        assert (principal.user_id, principal.organization) == ("ana", "acme")
        assert principal.scopes == {"chat"}
        es = token(EC_KEY, kid="ec1", alg="ES256", now=clock.now, scope=["admin", "x"])
        assert (await v.verify(es)).scopes == {"admin"}
        ed = token(ED_KEY, kid="ed1", alg="EdDSA", now=clock.now, scope=None)
        now = v.verify_now(ed)
        assert now is not None and now.scopes == {"chat", "sessions:read"}  # default_scopes
        assert jwks.fetches == 1
    finally:
        await v.aclose()


@pytest.mark.parametrize(
    ("claims", "code", "reason"),
    [
        ({"iss": "https://evil.test/"}, "token_issuer", "issuer"),
        ({"aud": "someone-else"}, "token_audience", "audience"),
        ({"exp": 1_800_000_000 - 60}, "token_expired", "expired"),
        ({"nbf": 1_800_000_000 + 600}, "token_not_yet_valid", "not valid yet"),
        ({"exp": None}, "invalid_token", "'exp'"),
    ],
)
async def test_bad_claims_are_refused_naming_the_reason(
    jwks: Jwks, claims: dict[str, Any], code: str, reason: str
) -> None:
    """Wrong issuer, wrong audience, expired (beyond the leeway), not yet valid, no exp:
    401 with a code and a message that names the reason."""
    clock = Clock()
    jwks.keys = [jwk(RSA_KEY, "rsa1")]
    v = verifier(jwks.url, clock)
    try:
        error = await refused(v, token(RSA_KEY, now=clock.now, **claims))
        assert error.code == code
        assert reason in error.message
    finally:
        await v.aclose()


async def test_expiry_within_the_leeway_is_accepted(jwks: Jwks) -> None:
    """A token expired 10 s ago passes with leeway_s 30."""
    clock = Clock()
    jwks.keys = [jwk(RSA_KEY, "rsa1")]
    v = verifier(jwks.url, clock)
    try:
        await v.verify(token(RSA_KEY, now=clock.now - 310))
    finally:
        await v.aclose()


async def test_an_unknown_kid_refreshes_once_then_is_refused(jwks: Jwks) -> None:
    """A token with a kid not in the cached JWKS triggers one refetch: a key added at the
    issuer is then found; a kid still unknown is refused, and within jwks_refresh_min_s a
    further unknown kid is refused without fetching again."""
    clock = Clock()
    jwks.keys = [jwk(RSA_KEY, "rsa1")]
    v = verifier(jwks.url, clock, jwks_refresh_min_s=30)
    try:
        await v.verify(token(RSA_KEY, now=clock.now))
        assert jwks.fetches == 1
        jwks.keys.append(jwk(EC_KEY, "ec1"))
        clock.now += 31
        rotated = token(EC_KEY, kid="ec1", alg="ES256", now=clock.now)
        assert v.verify_now(rotated) is None
        assert (await v.verify(rotated)).user_id == "ana"
        assert jwks.fetches == 2
        ghost = token(RSA_KEY, kid="ghost", now=clock.now)
        error = await refused(v, ghost)
        assert error.code == "token_key_unknown" and "ghost" in error.message
        with pytest.raises(Unauthorized):
            v.verify_now(ghost)
        assert jwks.fetches == 2
        clock.now += 31
        await refused(v, ghost)
        assert jwks.fetches == 3
    finally:
        await v.aclose()


async def test_alg_none_is_refused(jwks: Jwks) -> None:
    """An unsigned token (alg none) is refused before any key is looked at."""
    clock = Clock()
    jwks.keys = [jwk(RSA_KEY, "rsa1")]
    v = verifier(jwks.url, clock)
    try:
        unsigned = jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "ana", "exp": int(clock.now) + 60},
            "",
            algorithm="none",
            headers={"kid": "rsa1"},
        )
        error = await refused(v, unsigned)
        assert error.code == "token_algorithm" and "'none'" in error.message
        assert jwks.fetches == 0
    finally:
        await v.aclose()


async def test_hs256_signed_with_the_rsa_public_key_is_refused(jwks: Jwks) -> None:
    """HS/RS confusion: an HS256 token whose HMAC secret is the issuer's RSA public key
    (PEM) is refused, also when HS256 would otherwise be tried."""
    clock = Clock()
    jwks.keys = [jwk(RSA_KEY, "rsa1")]
    v = verifier(jwks.url, clock)
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": int(clock.now) + 60}
    header = {"kid": "rsa1", "alg": "HS256", "typ": "JWT"}
    # PyJWT refuses to HMAC with a PEM key, so the forged token is built by hand.
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{b64(signature)}"
    try:
        error = await refused(v, forged)
        assert error.code == "token_algorithm" and "HS256" in error.message
    finally:
        await v.aclose()


async def test_an_algorithm_that_does_not_fit_the_key_is_refused(jwks: Jwks) -> None:
    """An ES256 header naming the RSA key's kid is refused (the key's type pins its
    algorithms)."""
    clock = Clock()
    jwks.keys = [jwk(RSA_KEY, "rsa1")]
    v = verifier(jwks.url, clock)
    try:
        error = await refused(v, token(EC_KEY, kid="rsa1", alg="ES256", now=clock.now))
        assert error.code == "token_algorithm"
    finally:
        await v.aclose()


async def test_a_jwks_file_is_read_without_network(tmp_path: Path) -> None:
    """With jwks_file, verify_now decides at once."""
    clock = Clock()
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk(ED_KEY, "ed1")]}))
    v = OidcVerifier(OidcSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=path), clock=clock)
    principal = v.verify_now(token(ED_KEY, kid="ed1", alg="EdDSA", now=clock.now))
    assert principal is not None and principal.user_id == "ana"


def test_symmetric_algorithms_cannot_be_configured() -> None:
    """auth.oidc.algorithms refuses HS256 and none."""
    from pydantic import ValidationError

    for alg in ("HS256", "none"):
        with pytest.raises(ValidationError, match="public-key"):
            OidcSettings(algorithms=[alg])


async def test_a_verified_token_is_checked_once_but_still_expires(
    jwks: Jwks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same token again costs no signature check; once past its expiry it is refused
    all the same."""
    clock = Clock()
    jwks.keys = [jwk(RSA_KEY, "rsa1")]
    v = verifier(jwks.url, clock)
    decodes = 0
    real_decode = jwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        nonlocal decodes
        decodes += 1
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    try:
        tok = token(RSA_KEY, now=clock.now)
        first = await v.verify(tok)
        assert v.verify_now(tok) == first and await v.verify(tok) == first
        assert decodes == 1
        clock.now += 300 + 31  # past exp plus the 30 s leeway
        error = await refused(v, tok)
        assert error.code == "token_expired"
    finally:
        await v.aclose()
