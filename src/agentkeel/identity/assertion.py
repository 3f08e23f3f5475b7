"""Caller assertions: who a call acts for, as a short-lived JWT signed with Ed25519.

A replica signs one assertion per tool call; the service it calls verifies it
and acts only on what verified. Claims:

=========  ==============================================================
``iss``    who signed it (``identity.issuer``)
``aud``    the one service it is for (e.g. ``agentkeel-tools``)
``sub``    the user the call acts for
``agent``  the agent id; ``session`` and ``turn`` where in the conversation
``tool``   the one tool it may be used for, so it cannot be replayed elsewhere
``org``    the organization, when the caller has one
``iat``    issued at; ``exp`` expiry, at most a minute later
``jti``    a random id; a verifier with a ``ReplayCache`` accepts it once
=========  ==============================================================

The algorithm is pinned to EdDSA on both sides: an ``alg: none`` or HMAC token
is refused whatever it says. Times are checked against the clock passed in
(with a small leeway), so tests need not sleep.

>>> token = sign_caller_assertion(key, issuer="agentkeel", audience="agentkeel-tools",
...     tool="memory_search", agent_id="support", user_id="alice", session_id="s1", turn=3)
>>> verify_caller_assertion(token, key=key.public_key(), issuer="agentkeel",
...     audience="agentkeel-tools", tool="memory_search").user_id
'alice'
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agentkeel.errors import CallerAssertionRefused, ConfigError
from agentkeel.identity.replay import ReplayCache

ALGORITHM = "EdDSA"
MAX_TTL_S = 60.0
"""No assertion lives longer than this, whatever its signer asked for."""

_MAX_TEXT = 256
_MAX_TOKEN_CHARS = 4096
_REQUIRED = ("iss", "aud", "sub", "agent", "session", "turn", "tool", "iat", "exp", "jti")

WallClock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class CallerAssertion:
    """The verified claims of one assertion."""

    issuer: str
    audience: str
    user_id: str
    agent_id: str
    session_id: str
    turn: int
    tool: str
    issued_at: float
    expires_at: float
    jti: str
    organization: str | None = None


def sign_caller_assertion(
    key: Ed25519PrivateKey,
    *,
    issuer: str,
    audience: str,
    tool: str,
    agent_id: str,
    user_id: str,
    session_id: str,
    turn: int,
    organization: str | None = None,
    ttl_s: float = 30.0,
    now: float | None = None,
) -> str:
    """A compact JWT naming the caller of one call to ``tool`` on ``audience``."""
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ConfigError(
            f"identity.ttl_s is {ttl_s}; a caller assertion lives more than 0 and at most "
            f"{MAX_TTL_S:g} seconds."
        )
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": user_id,
        "agent": agent_id,
        "session": session_id,
        "turn": turn,
        "tool": tool,
        "iat": int(issued),
        "exp": int(issued + ttl_s),
        "jti": secrets.token_urlsafe(16),
    }
    if organization is not None:
        claims["org"] = organization
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify_caller_assertion(
    token: str,
    *,
    key: Ed25519PublicKey,
    issuer: str,
    audience: str,
    tool: str,
    now: float | None = None,
    leeway_s: float = 5.0,
    replay: ReplayCache | None = None,
) -> CallerAssertion:
    """The claims of ``token`` once its signature, issuer, audience, tool and times check
    out (and, with ``replay``, it was not used before).

    Raises ``CallerAssertionRefused`` saying which check failed; the message never
    contains the token.
    """
    claims = decode_pinned(token, key=key, issuer=issuer, audience=audience, required=_REQUIRED)
    assertion = _claims(claims, audience=audience)
    current = time.time() if now is None else now
    check_lifetime(
        issued_at=assertion.issued_at,
        expires_at=assertion.expires_at,
        now=current,
        leeway_s=leeway_s,
    )
    if assertion.tool != tool:
        raise _refused(f"it was made for the tool '{assertion.tool}', not '{tool}'")
    if replay is not None and not replay.first_use(
        assertion.jti, expires_at=assertion.expires_at + leeway_s, now=current
    ):
        raise _refused("it was already used; an assertion is good for one call")
    return assertion


def decode_pinned(
    token: str,
    *,
    key: Ed25519PublicKey,
    issuer: str,
    audience: str,
    required: tuple[str, ...],
) -> dict[str, Any]:
    """The claims of an EdDSA-signed ``token`` for ``audience`` from ``issuer``, with
    ``required`` present; times are left to ``check_lifetime``. Raises
    ``CallerAssertionRefused`` naming the check that failed, never the token."""
    if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_CHARS:
        raise _refused("it is not a compact JWT of at most 4096 characters")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            options={
                "require": list(required),
                # Times are checked by check_lifetime against the clock passed in.
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.InvalidAlgorithmError as exc:
        raise _refused(
            f"it is not signed with {ALGORITHM}; no other algorithm is accepted"
        ) from exc
    except jwt.InvalidSignatureError as exc:
        raise _refused(
            "its signature does not verify with this service's public key "
            "(identity.public_key_file must be the public half of the signer's key)"
        ) from exc
    except jwt.InvalidAudienceError as exc:
        raise _refused(f"it was not made for this service (audience '{audience}')") from exc
    except jwt.InvalidIssuerError as exc:
        raise _refused(f"its issuer is not '{issuer}' (identity.issuer)") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise _refused(f"it has no '{exc.claim}' claim") from exc
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise _refused("it is not a well-formed signed JWT") from exc
    return claims


def check_lifetime(*, issued_at: float, expires_at: float, now: float, leeway_s: float) -> None:
    """Refuse an assertion that lives longer than ``MAX_TTL_S``, has expired, or was
    issued in the future (each beyond ``leeway_s``)."""
    if expires_at - issued_at > MAX_TTL_S:
        raise _refused(f"it lives longer than {MAX_TTL_S:g} seconds")
    if now > expires_at + leeway_s:
        raise _refused(
            f"it expired {now - expires_at:.0f}s ago; an assertion is made for "
            "one call and is not reused"
        )
    if issued_at > now + leeway_s:
        raise _refused("it was issued in the future; check the clocks of both machines")


class CallerSigner:
    """Signs caller assertions with one private key (what a replica holds).

    >>> signer = CallerSigner(key=key, issuer="agentkeel", ttl_s=30)
    >>> token = signer.sign(audience="agentkeel-tools", tool="calculator", agent_id="a",
    ...     user_id="u", session_id="s", turn=1)
    """

    def __init__(
        self,
        *,
        key: Ed25519PrivateKey,
        issuer: str,
        ttl_s: float = 30.0,
        time: WallClock | None = None,
    ) -> None:
        self._key = key
        self.issuer = issuer
        self.ttl_s = ttl_s
        self._time = time

    def __repr__(self) -> str:
        return f"CallerSigner(issuer={self.issuer!r}, ttl_s={self.ttl_s!r})"

    def sign(
        self,
        *,
        audience: str,
        tool: str,
        agent_id: str,
        user_id: str,
        session_id: str,
        turn: int,
        organization: str | None = None,
    ) -> str:
        return sign_caller_assertion(
            self._key,
            issuer=self.issuer,
            audience=audience,
            tool=tool,
            agent_id=agent_id,
            user_id=user_id,
            session_id=session_id,
            turn=turn,
            organization=organization,
            ttl_s=self.ttl_s,
            now=None if self._time is None else self._time(),
        )


class CallerVerifier:
    """Verifies caller assertions for one audience with one public key, each once.

    >>> verifier = CallerVerifier(key=public_key, issuer="agentkeel", audience="agentkeel-tools")
    >>> verifier.verify(token, tool="memory_search").user_id
    """

    def __init__(
        self,
        *,
        key: Ed25519PublicKey,
        issuer: str,
        audience: str,
        leeway_s: float = 5.0,
        time: WallClock | None = None,
        replay: ReplayCache | None = None,
    ) -> None:
        self._key = key
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self._time = time
        self._replay = replay if replay is not None else ReplayCache()

    def __repr__(self) -> str:
        return f"CallerVerifier(issuer={self.issuer!r}, audience={self.audience!r})"

    def verify(self, token: str, *, tool: str) -> CallerAssertion:
        return verify_caller_assertion(
            token,
            key=self._key,
            issuer=self.issuer,
            audience=self.audience,
            tool=tool,
            now=None if self._time is None else self._time(),
            leeway_s=self.leeway_s,
            replay=self._replay,
        )


def _claims(claims: Mapping[str, Any], *, audience: str) -> CallerAssertion:
    def text(name: str) -> str:
        value = claims.get(name)
        if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
            raise _refused(f"its '{name}' claim is not a string of 1 to {_MAX_TEXT} characters")
        return value

    def number(name: str) -> float:
        value = claims.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _refused(f"its '{name}' claim is not a number of seconds")
        return float(value)

    turn = claims.get("turn")
    if isinstance(turn, bool) or not isinstance(turn, int) or turn < 0:
        raise _refused("its 'turn' claim is not a whole number")
    organization = claims.get("org")
    if organization is not None and (
        not isinstance(organization, str) or len(organization) > _MAX_TEXT
    ):
        raise _refused(f"its 'org' claim is not a string of at most {_MAX_TEXT} characters")
    return CallerAssertion(
        issuer=text("iss"),
        audience=audience,
        user_id=text("sub"),
        agent_id=text("agent"),
        session_id=text("session"),
        turn=turn,
        tool=text("tool"),
        issued_at=number("iat"),
        expires_at=number("exp"),
        jti=text("jti"),
        organization=organization,
    )


def _refused(reason: str) -> CallerAssertionRefused:
    return CallerAssertionRefused(f"The caller assertion was refused: {reason}.")
