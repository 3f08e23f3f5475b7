"""Caller assertions: what verifies, and every way one is refused."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentkeel.errors import CallerAssertionRefused, ConfigError
from agentkeel.identity import (
    MAX_TTL_S,
    CallerSigner,
    CallerVerifier,
    ReplayCache,
    sign_caller_assertion,
    verify_caller_assertion,
)
from agentkeel.resilience.clock import ManualClock

NOW = 1_700_000_000.0


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def sign(key: Ed25519PrivateKey, **overrides: Any) -> str:
    fields: dict[str, Any] = {
        "issuer": "agentkeel",
        "audience": "agentkeel-tools",
        "tool": "memory_search",
        "agent_id": "support",
        "user_id": "alice",
        "session_id": "s1",
        "turn": 2,
        "now": NOW,
        **overrides,
    }
    return sign_caller_assertion(key, **fields)


def verify(key: Ed25519PrivateKey, token: str, **overrides: Any) -> Any:
    fields: dict[str, Any] = {
        "key": key.public_key(),
        "issuer": "agentkeel",
        "audience": "agentkeel-tools",
        "tool": "memory_search",
        "now": NOW + 1,
        **overrides,
    }
    return verify_caller_assertion(token, **fields)


def test_a_signed_assertion_verifies_to_its_claims(key: Ed25519PrivateKey) -> None:
    """The verified assertion names the user, agent, session, turn, tool, organization
    and times the signer wrote."""
    found = verify(key, sign(key, organization="acme", ttl_s=20))
    assert (found.user_id, found.agent_id, found.session_id, found.turn) == (
        "alice",
        "support",
        "s1",
        2,
    )
    assert (found.tool, found.organization, found.issuer) == ("memory_search", "acme", "agentkeel")
    assert found.expires_at - found.issued_at == 20


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"issuer": "someone-else"}, "issuer is not 'someone-else'"),
        ({"audience": "memory"}, "not made for this service"),
        ({"tool": "memory_store"}, "made for the tool 'memory_search', not 'memory_store'"),
        ({"now": NOW + 36}, "expired"),
        ({"now": NOW - 60}, "issued in the future"),
    ],
)
def test_a_mismatch_is_refused_with_its_reason(
    key: Ed25519PrivateKey, change: dict[str, Any], reason: str
) -> None:
    """Another issuer, audience or tool, a time past expiry plus leeway, or one long
    before issue are each refused, saying which."""
    with pytest.raises(CallerAssertionRefused, match=reason):
        verify(key, sign(key), **change)


def test_leeway_admits_a_little_clock_skew(key: Ed25519PrivateKey) -> None:
    """Within the leeway after expiry the assertion still verifies; past it, not."""
    token = sign(key, ttl_s=10)
    assert verify(key, token, now=NOW + 14, leeway_s=5).user_id == "alice"
    with pytest.raises(CallerAssertionRefused, match="expired"):
        verify(key, token, now=NOW + 16, leeway_s=5)


def _claims(**overrides: Any) -> dict[str, Any]:
    return {
        "iss": "agentkeel",
        "aud": "agentkeel-tools",
        "sub": "alice",
        "agent": "support",
        "session": "s1",
        "turn": 1,
        "tool": "memory_search",
        "iat": int(NOW),
        "exp": int(NOW) + 30,
        "jti": "j1",
        **overrides,
    }


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        (_claims(exp=int(NOW) + 3600), "lives longer than 60 seconds"),
        ({k: v for k, v in _claims().items() if k != "sub"}, "no 'sub' claim"),
        (_claims(turn="3"), "'turn' claim is not a whole number"),
        (_claims(sub=""), "no 'sub' claim|'sub' claim is not a string"),
        (_claims(agent="x" * 300), "'agent' claim is not a string"),
    ],
)
def test_bad_claims_are_refused(
    key: Ed25519PrivateKey, claims: dict[str, Any], reason: str
) -> None:
    """A correctly signed token with a long life, a missing claim or a claim of the wrong
    type is refused."""
    token = jwt.encode(claims, key, algorithm="EdDSA")
    with pytest.raises(CallerAssertionRefused, match=reason):
        verify(key, token)


def test_other_keys_and_algorithms_are_refused(key: Ed25519PrivateKey) -> None:
    """A token signed by another Ed25519 key, with alg none, or with HS256 is refused;
    so is text that is not a JWT."""
    other = Ed25519PrivateKey.generate()
    with pytest.raises(CallerAssertionRefused, match="signature does not verify"):
        verify(key, sign(other))
    for token in (
        jwt.encode(_claims(), "", algorithm="none"),
        jwt.encode(_claims(), "a-shared-secret-of-32-bytes-long!", algorithm="HS256"),
    ):
        with pytest.raises(CallerAssertionRefused, match="not signed with EdDSA"):
            verify(key, token)
    for garbage in ("", "a.b", "x" * 5000):
        with pytest.raises(CallerAssertionRefused):
            verify(key, garbage)


def test_refusals_never_contain_the_token(key: Ed25519PrivateKey) -> None:
    """Whatever the reason, the message does not repeat the token or its signature."""
    token = sign(key)
    for change in ({"tool": "x"}, {"now": NOW + 500}, {"audience": "y"}):
        with pytest.raises(CallerAssertionRefused) as refused:
            verify(key, token, **change)
        assert token not in refused.value.message
        assert token.rsplit(".", 1)[1] not in refused.value.message


def test_a_replay_cache_accepts_each_assertion_once(key: Ed25519PrivateKey) -> None:
    """With a replay cache the same assertion verifies once; a new one for the same
    call verifies again."""
    cache = ReplayCache()
    token = sign(key)
    verify(key, token, replay=cache)
    with pytest.raises(CallerAssertionRefused, match="already used"):
        verify(key, token, replay=cache)
    verify(key, sign(key), replay=cache)


def test_signer_and_verifier_use_the_clock_they_are_given(key: Ed25519PrivateKey) -> None:
    """CallerSigner and CallerVerifier read time from the clock passed in, so expiry is
    tested without sleeping; their repr shows no key."""
    clock = ManualClock()
    signer = CallerSigner(key=key, issuer="agentkeel", ttl_s=10, time=clock.time)
    verifier = CallerVerifier(
        key=key.public_key(), issuer="agentkeel", audience="tools", leeway_s=0, time=clock.time
    )
    fields: dict[str, Any] = {
        "audience": "tools",
        "agent_id": "a",
        "user_id": "u",
        "session_id": "s",
        "turn": 1,
    }
    fresh = signer.sign(tool="t", **fields)
    assert verifier.verify(fresh, tool="t").user_id == "u"
    stale = signer.sign(tool="t", **fields)
    clock.advance(11)
    with pytest.raises(CallerAssertionRefused, match="expired"):
        verifier.verify(stale, tool="t")
    assert "key" not in repr(signer).lower() and "key" not in repr(verifier).lower()


def test_a_lifetime_over_a_minute_cannot_be_signed(key: Ed25519PrivateKey) -> None:
    """ttl_s above MAX_TTL_S (or not positive) is a ConfigError naming identity.ttl_s."""
    for ttl in (MAX_TTL_S + 1, 0):
        with pytest.raises(ConfigError, match=r"identity\.ttl_s"):
            sign(key, ttl_s=ttl)
