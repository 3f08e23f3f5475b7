"""The front-door assertion: the router's principal, signed, verified by the replica."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentkeel.config.settings import KeelSettings
from agentkeel.errors import CallerAssertionRefused
from agentkeel.identity.forwarded import (
    FrontDoorSigner,
    FrontDoorVerifier,
    build_front_door_signer,
    build_front_door_verifier,
)
from agentkeel.identity.keys import generate_key_pair
from agentkeel.identity.principal import Principal
from agentkeel.secrets.resolver import SecretResolver

PRINCIPAL = Principal(
    kind="api_key",
    credential="api_key:ci",
    user_id="ana",
    organization="acme",
    scopes=frozenset({"chat", "sessions:read"}),
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def pair(
    clock: Clock, *, audience: str = "agentkeel-agent"
) -> tuple[FrontDoorSigner, FrontDoorVerifier]:
    key = Ed25519PrivateKey.generate()
    signer = FrontDoorSigner(key=key, issuer="agentkeel", audience=audience, ttl_s=30, clock=clock)
    verifier = FrontDoorVerifier(
        key=key.public_key(), issuer="agentkeel", audience="agentkeel-agent", clock=clock
    )
    return signer, verifier


def test_round_trip_gives_back_the_principal() -> None:
    """What the router signs, the replica verifies into the same principal, including one
    without user or organization."""
    clock = Clock()
    signer, verifier = pair(clock)
    assert verifier.verify(signer.sign(PRINCIPAL)) == PRINCIPAL
    org_key = Principal(
        kind="oidc",
        credential="oidc:svc",
        user_id=None,
        organization=None,
        scopes=frozenset({"chat"}),
    )
    assert verifier.verify(signer.sign(org_key)) == org_key


def test_the_signer_reuses_a_token_until_a_third_of_its_life_is_left() -> None:
    """Same principal within 2/3 of the ttl: the same token; later: a new one."""
    clock = Clock()
    signer, _ = pair(clock)
    first = signer.sign(PRINCIPAL)
    clock.now += 15
    assert signer.sign(PRINCIPAL) == first
    clock.now += 6
    assert signer.sign(PRINCIPAL) != first


def test_a_token_from_another_key_is_refused() -> None:
    """A forged assertion (signed with a key the replica does not trust) is 401."""
    clock = Clock()
    _, verifier = pair(clock)
    forger, _ = pair(clock)
    with pytest.raises(CallerAssertionRefused, match="signature"):
        verifier.verify(forger.sign(PRINCIPAL))


def test_an_expired_token_is_refused_even_after_it_was_cached() -> None:
    """Past exp (+ leeway) the assertion is refused, also when it verified before."""
    clock = Clock()
    signer, verifier = pair(clock)
    token = signer.sign(PRINCIPAL)
    verifier.verify(token)
    clock.now += 36
    with pytest.raises(CallerAssertionRefused, match="expired"):
        verifier.verify(token)


def test_a_token_for_another_audience_is_refused() -> None:
    """An assertion made for another service is 401 naming the audience."""
    clock = Clock()
    signer, verifier = pair(clock, audience="agentkeel-tools")
    with pytest.raises(CallerAssertionRefused, match="audience"):
        verifier.verify(signer.sign(PRINCIPAL))


def test_hmac_and_none_tokens_are_refused() -> None:
    """alg none and HS256 claims are refused whatever they say."""
    clock = Clock()
    _, verifier = pair(clock)
    claims = {
        "iss": "agentkeel",
        "aud": "agentkeel-agent",
        "kind": "api_key",
        "cred": "api_key:x",
        "scopes": ["admin"],
        "iat": int(clock.now),
        "exp": int(clock.now) + 30,
    }
    for token in (
        jwt.encode(claims, "s" * 32, algorithm="HS256"),
        jwt.encode(claims, "", algorithm="none"),
    ):
        with pytest.raises(CallerAssertionRefused):
            verifier.verify(token)


def test_builders_read_the_identity_keys(tmp_path: Path) -> None:
    """The signer reads identity.signing_key_file; the verifier the public key, else the
    public half of the signing key; neither without keys."""
    pem = generate_key_pair()
    (tmp_path / "signing").write_text(pem.private_pem)
    settings = KeelSettings(
        data_dir=tmp_path,
        secrets_dir=tmp_path / "none",
        identity={"signing_key_file": tmp_path / "signing"},
    )
    resolver = SecretResolver(secrets_dir=tmp_path / "none")
    signer = build_front_door_signer(settings, secrets=resolver)
    verifier = build_front_door_verifier(settings, secrets=resolver)
    assert signer is not None and verifier is not None
    assert verifier.verify(signer.sign(PRINCIPAL)) == PRINCIPAL
    bare = KeelSettings(data_dir=tmp_path, secrets_dir=tmp_path / "none")
    assert build_front_door_signer(bare, secrets=resolver) is None
    assert build_front_door_verifier(bare, secrets=resolver) is None
