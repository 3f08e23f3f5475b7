"""The front-door assertion: the router tells a replica who the caller is.

After the router authenticated a client (API key or OIDC token), it sends the
replica the ``Principal`` as a short-lived EdDSA JWT in ``CALLER_HEADER``,
signed with the identity signing key (``identity.signing_key_file``). Claims:

==========  =============================================================
``iss``     ``identity.issuer``
``aud``     ``auth.assertion_audience`` (``agentkeel-agent``)
``kind``    ``api_key`` or ``oidc``; ``cred`` the credential's name
``sub``     the user, when the credential is bound to one; ``org`` likewise
``scopes``  a list of scopes
``iat``     issued at; ``exp`` at most ``identity.ttl_s`` (<= 60 s) later
==========  =============================================================

Signing and verifying cost a little on every request, so both sides cache: the
signer reuses a principal's token until a third of its life is left, and the
verifier remembers a token it verified until it expires. The algorithm is
pinned as in ``identity/assertion.py`` (EdDSA only, ``none`` and HMAC refused).

>>> signer = FrontDoorSigner(key=key, issuer="agentkeel", audience="agentkeel-agent")
>>> verifier = FrontDoorVerifier(key=key.public_key(), issuer="agentkeel",
...     audience="agentkeel-agent")
>>> verifier.verify(signer.sign(principal)) == principal
True
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, cast, get_args

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agentkeel.config.settings import KeelSettings
from agentkeel.errors import CallerAssertionRefused, ConfigError
from agentkeel.identity.assertion import (
    ALGORITHM,
    MAX_TTL_S,
    WallClock,
    check_lifetime,
    decode_pinned,
)
from agentkeel.identity.keys import identity_public_key, identity_signing_key
from agentkeel.identity.principal import SCOPES, Principal, PrincipalKind
from agentkeel.secrets.resolver import SecretResolver

_REQUIRED = ("iss", "aud", "kind", "cred", "scopes", "iat", "exp")
_KINDS = frozenset(get_args(PrincipalKind)) - {"anonymous"}
_MAX_TEXT = 256
_CACHE_ENTRIES = 10_000


class FrontDoorSigner:
    """Signs front-door assertions with the identity signing key (the router's side).

    >>> signer = FrontDoorSigner(key=key, issuer="agentkeel", audience="agentkeel-agent")
    >>> headers = {CALLER_HEADER: signer.sign(principal)}
    """

    def __init__(
        self,
        *,
        key: Ed25519PrivateKey,
        issuer: str,
        audience: str,
        ttl_s: float = 30.0,
        clock: WallClock | None = None,
    ) -> None:
        if not 0 < ttl_s <= MAX_TTL_S:
            raise ConfigError(
                f"identity.ttl_s is {ttl_s}; a front-door assertion lives more than 0 and at "
                f"most {MAX_TTL_S:g} seconds."
            )
        self._key = key
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s
        self._clock = clock or time.time
        self._cache: OrderedDict[Principal, tuple[str, float]] = OrderedDict()

    def __repr__(self) -> str:
        return f"FrontDoorSigner(issuer={self.issuer!r}, audience={self.audience!r})"

    def sign(self, principal: Principal) -> str:
        """The assertion for ``principal``: a cached one while more than a third of its
        life is left, else a new one."""
        if principal.anonymous:
            raise ConfigError(
                "The anonymous caller has no front-door assertion; a replica behind a router "
                "with auth off runs with auth off too."
            )
        now = self._clock()
        cached = self._cache.get(principal)
        if cached is not None and cached[1] - now > self.ttl_s / 3:
            self._cache.move_to_end(principal)
            return cached[0]
        issued = int(now)
        expires = issued + int(self.ttl_s)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "kind": principal.kind,
            "cred": principal.credential,
            "scopes": sorted(principal.scopes),
            "iat": issued,
            "exp": expires,
        }
        if principal.user_id is not None:
            claims["sub"] = principal.user_id
        if principal.organization is not None:
            claims["org"] = principal.organization
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM)
        self._cache[principal] = (token, float(expires))
        self._cache.move_to_end(principal)
        while len(self._cache) > _CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return token


class FrontDoorVerifier:
    """Verifies front-door assertions (the replica's side); raises
    ``CallerAssertionRefused`` (401) naming the check that failed.

    >>> verifier = FrontDoorVerifier(key=public_key, issuer="agentkeel",
    ...     audience="agentkeel-agent")
    >>> verifier.verify(request.headers[CALLER_HEADER]).credential
    'api_key:ci'
    """

    def __init__(
        self,
        *,
        key: Ed25519PublicKey,
        issuer: str,
        audience: str,
        leeway_s: float = 5.0,
        clock: WallClock | None = None,
    ) -> None:
        self._key = key
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self._clock = clock or time.time
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def __repr__(self) -> str:
        return f"FrontDoorVerifier(issuer={self.issuer!r}, audience={self.audience!r})"

    def verify(self, token: str) -> Principal:
        now = self._clock()
        cached = self._cache.get(token)
        if cached is not None:
            if now <= cached[1] + self.leeway_s:
                return cached[0]
            del self._cache[token]
        claims = decode_pinned(
            token, key=self._key, issuer=self.issuer, audience=self.audience, required=_REQUIRED
        )
        issued_at, expires_at = _number(claims, "iat"), _number(claims, "exp")
        check_lifetime(issued_at=issued_at, expires_at=expires_at, now=now, leeway_s=self.leeway_s)
        principal = _principal(claims)
        self._cache[token] = (principal, expires_at)
        while len(self._cache) > _CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return principal


def build_front_door_signer(
    settings: KeelSettings, *, secrets: SecretResolver, clock: WallClock | None = None
) -> FrontDoorSigner | None:
    """A signer over the identity signing key (``identity.signing_key_file`` or the
    secrets directory's ``identity.signing_key_secret``); ``None`` when there is none."""
    identity = settings.identity
    key = identity_signing_key(identity, secrets)
    if key is None:
        return None
    return FrontDoorSigner(
        key=key,
        issuer=identity.issuer,
        audience=settings.auth.assertion_audience,
        ttl_s=identity.ttl_s,
        clock=clock,
    )


def build_front_door_verifier(
    settings: KeelSettings, *, secrets: SecretResolver, clock: WallClock | None = None
) -> FrontDoorVerifier | None:
    """A verifier over ``identity.public_key_file`` (or its secret), else the public half
    of the signing key; ``None`` when neither exists."""
    identity = settings.identity
    public = identity_public_key(identity, secrets)
    if public is None:
        private = identity_signing_key(identity, secrets)
        if private is None:
            return None
        public = private.public_key()
    return FrontDoorVerifier(
        key=public,
        issuer=identity.issuer,
        audience=settings.auth.assertion_audience,
        leeway_s=identity.leeway_s,
        clock=clock,
    )


def _principal(claims: dict[str, Any]) -> Principal:
    kind = claims.get("kind")
    if kind not in _KINDS:
        raise _refused(f"its 'kind' claim is not one of {sorted(_KINDS)}")
    scopes = claims.get("scopes")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise _refused("its 'scopes' claim is not a list of strings")
    return Principal(
        kind=cast(PrincipalKind, kind),
        credential=_text(claims, "cred", required=True) or "",
        user_id=_text(claims, "sub", required=False),
        organization=_text(claims, "org", required=False),
        scopes=frozenset(scope for scope in scopes if scope in SCOPES),
    )


def _text(claims: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise _refused(f"its '{name}' claim is not a string of 1 to {_MAX_TEXT} characters")
    return value


def _number(claims: dict[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refused(f"its '{name}' claim is not a number of seconds")
    return float(value)


def _refused(reason: str) -> CallerAssertionRefused:
    return CallerAssertionRefused(f"The front-door assertion was refused: {reason}.")
