"""OIDC bearer tokens: JWTs from the configured issuer, verified with its JWKS.

- Keys come from ``auth.oidc.jwks_file`` or ``auth.oidc.jwks_url`` (fetched with
  httpx, reused for ``jwks_cache_s``). A token whose ``kid`` is not in the set
  triggers one refresh, at most every ``jwks_refresh_min_s``; still unknown, it is
  refused. When a refresh fails, the keys already held keep working.
- The algorithm is pinned: the token's ``alg`` must be in ``auth.oidc.algorithms``
  (public-key algorithms only) and match the key's type, so ``alg: none`` and an
  HS256 token "signed" with the public key (HS/RS confusion) are refused.
- ``iss`` and ``aud`` must match; ``exp`` is required, ``exp``/``nbf``/``iat`` are
  checked with ``leeway_s``.
- The principal: the user from ``user_claim``, the organization from ``org_claim``,
  the scopes from ``scopes_claim`` (a space-separated string or a list) kept to
  ``SCOPES``; when none of ours is named, ``default_scopes``.

Every refusal is a 401 whose message names the reason, never the token.

>>> verifier = OidcVerifier(settings.auth.oidc)
>>> (await verifier.verify(token)).credential
'oidc:ana'
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from agentkeel.config.auth import OidcSettings
from agentkeel.errors import ConfigError, Unauthorized, Unavailable
from agentkeel.identity.principal import SCOPES, Principal

logger = logging.getLogger(__name__)

_MAX_TOKEN_CHARS = 16_384
_MAX_JWKS_BYTES = 1024 * 1024
_MAX_TEXT = 256
_VERIFIED_CACHE_SIZE = 10_000
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


@dataclass(frozen=True, slots=True)
class _Key:
    """One verification key and the algorithm its JWK pins, if any."""

    jwk: jwt.PyJWK
    alg: str | None


class _KeySet:
    """The keys of one JWKS document, by ``kid``, and when it was read."""

    def __init__(self, keys: Mapping[str, _Key], *, read_at: float) -> None:
        self.keys = dict(keys)
        self.read_at = read_at


class OidcVerifier:
    """Verifies OIDC bearer tokens (see the module doc).

    ``clock`` is a monotonic-and-wall clock in one (seconds); ``http`` a client to fetch
    the JWKS with (one is made, and closed by ``aclose``, when not given).

    >>> verifier = OidcVerifier(OidcSettings(issuer="https://id.example.com/",
    ...     audience="agentkeel", jwks_url="https://id.example.com/jwks.json"))
    >>> principal = await verifier.verify(token)
    """

    def __init__(
        self,
        settings: OidcSettings,
        *,
        clock: Callable[[], float] | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if not settings.configured:
            raise ConfigError("auth.oidc.issuer is not set; OIDC tokens cannot be verified.")
        self.settings = settings
        self._clock = clock or time.time
        self._http = http
        self._owns_http = http is None
        self._keys: _KeySet | None = None
        self._last_fetch: float | None = None
        self._fetch_lock = asyncio.Lock()
        # Tokens already verified, with the key that verified them: a client sends the
        # same token on every request, and an RS256 check costs far more than a lookup.
        self._verified: OrderedDict[str, tuple[_Key, Mapping[str, Any], Principal]] = OrderedDict()

    # Public --------------------------------------------------------------------------

    def verify_now(self, token: str) -> Principal | None:
        """The principal when it can be decided without network I/O; ``None`` when the
        JWKS must be fetched or refreshed first (then ``await verify``)."""
        header = self._header(token)
        kid = header.get("kid")
        keys = self._current_keys()
        if keys is None:
            return None
        key = self._find(keys, kid)
        if key is None:
            if self._may_refresh():
                return None
            raise _unknown_kid(kid)
        return self._decode(token, header, key)

    async def verify(self, token: str) -> Principal:
        """The principal of ``token``, fetching or refreshing the JWKS when needed."""
        header = self._header(token)
        kid = header.get("kid")
        keys = self._current_keys()
        if keys is None or (self._find(keys, kid) is None and self._may_refresh()):
            keys = await self._refresh(stale=keys)
        key = self._find(keys, kid)
        if key is None:
            raise _unknown_kid(kid)
        return self._decode(token, header, key)

    async def aclose(self) -> None:
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    # Keys ----------------------------------------------------------------------------

    def _current_keys(self) -> _KeySet | None:
        """The key set still within ``jwks_cache_s``; a file is read here (no network)."""
        keys = self._keys
        now = self._clock()
        if keys is not None and now - keys.read_at < self.settings.jwks_cache_s:
            return keys
        if self.settings.jwks_file is not None:
            self._keys = self._load_file(now)
            return self._keys
        return None

    def _may_refresh(self) -> bool:
        if self._last_fetch is None:
            return True
        return self._clock() - self._last_fetch >= self.settings.jwks_refresh_min_s

    async def _refresh(self, *, stale: _KeySet | None) -> _KeySet:
        async with self._fetch_lock:
            # Another request may have refreshed while this one waited.
            if self._keys is not None and self._keys is not stale:
                return self._keys
            now = self._clock()
            if self.settings.jwks_file is not None:
                self._keys = self._load_file(now)
                self._last_fetch = now
                return self._keys
            self._last_fetch = now
            try:
                self._keys = _KeySet(await self._fetch(), read_at=now)
            except Unavailable:
                if self._keys is None:
                    raise
                logger.warning(
                    "Refreshing the OIDC JWKS from %s failed; still using the keys read before.",
                    self.settings.jwks_url,
                )
                # Keep the old keys usable until the next allowed refresh.
                self._keys = _KeySet(self._keys.keys, read_at=now)
            return self._keys

    async def _fetch(self) -> dict[str, _Key]:
        url = self.settings.jwks_url
        assert url is not None
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=5.0)
        try:
            response = await self._http.get(url, headers={"accept": "application/json"})
            response.raise_for_status()
            if len(response.content) > _MAX_JWKS_BYTES:
                raise ValueError("the document is larger than 1 MiB")
            return _parse_jwks(response.json(), source=url)
        except (httpx.HTTPError, ValueError) as exc:
            raise Unavailable(
                f"The OIDC keys (JWKS) could not be fetched from {url} ({exc}). Check "
                "auth.oidc.jwks_url and that the issuer is reachable.",
                retry_after=max(1.0, self.settings.jwks_refresh_min_s),
                code="jwks_unavailable",
            ) from exc

    def _load_file(self, now: float) -> _KeySet:
        path = self.settings.jwks_file
        assert path is not None
        try:
            document = json.loads(path.read_bytes()[: _MAX_JWKS_BYTES + 1])
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"The OIDC JWKS file {path} cannot be read as JSON ({exc}). Point "
                "auth.oidc.jwks_file at the issuer's JWKS document."
            ) from exc
        return _KeySet(_parse_jwks(document, source=str(path)), read_at=now)

    @staticmethod
    def _find(keys: _KeySet, kid: object) -> _Key | None:
        if isinstance(kid, str):
            return keys.keys.get(kid)
        if kid is None and len(keys.keys) == 1:
            # An issuer with one key may leave kid out.
            return next(iter(keys.keys.values()))
        return None

    # Tokens --------------------------------------------------------------------------

    def _header(self, token: str) -> dict[str, Any]:
        if not token or len(token) > _MAX_TOKEN_CHARS:
            raise _refused("it is not a compact JWT", code="invalid_token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _refused("it is not a well-formed JWT", code="invalid_token") from exc
        alg = header.get("alg")
        if alg not in self.settings.algorithms:
            raise _refused(
                f"it is signed with '{alg}', which is not accepted (auth.oidc.algorithms: "
                f"{', '.join(self.settings.algorithms)}; never 'none' or HMAC)",
                code="token_algorithm",
            )
        return header

    def _decode(self, token: str, header: Mapping[str, Any], key: _Key) -> Principal:
        cached = self._verified.get(token)
        if cached is not None and cached[0] is key:
            # Its signature, issuer and audience held; its times are checked again.
            self._check_times(cached[1])
            self._verified.move_to_end(token)
            return cached[2]
        principal, claims = self._verify_token(token, header, key)
        self._verified[token] = (key, claims, principal)
        if len(self._verified) > _VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    def _verify_token(
        self, token: str, header: Mapping[str, Any], key: _Key
    ) -> tuple[Principal, Mapping[str, Any]]:
        alg = str(header["alg"])
        key_type = key.jwk.key_type
        if _KEY_TYPES.get(alg[:2]) != key_type or (key.alg is not None and key.alg != alg):
            raise _refused(
                f"its algorithm '{alg}' does not fit the {key_type} key '{header.get('kid')}'",
                code="token_algorithm",
            )
        settings = self.settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.jwk.key,
                algorithms=[alg],
                audience=settings.audience,
                issuer=settings.issuer,
                options={
                    "require": ["exp", "iss", "aud"],
                    # Times are checked by _check_times against the clock passed in.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidAudienceError as exc:
            raise _refused(
                f"its audience is not '{settings.audience}' (auth.oidc.audience)",
                code="token_audience",
            ) from exc
        except jwt.InvalidIssuerError as exc:
            raise _refused(
                f"its issuer is not '{settings.issuer}' (auth.oidc.issuer)", code="token_issuer"
            ) from exc
        except jwt.MissingRequiredClaimError as exc:
            raise _refused(f"it has no '{exc.claim}' claim", code="invalid_token") from exc
        except jwt.InvalidSignatureError as exc:
            raise _refused(
                "its signature does not verify with the issuer's key", code="token_signature"
            ) from exc
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise _refused("it is not a valid signed JWT", code="invalid_token") from exc
        self._check_times(claims)
        return self._principal(claims), claims

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now, leeway = self._clock(), self.settings.leeway_s

        def moment(name: str) -> float | None:
            value = claims.get(name)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _refused(f"its '{name}' claim is not a number", code="invalid_token")
            return float(value)

        expires = moment("exp")
        if expires is not None and now > expires + leeway:
            raise _refused(
                f"it expired {now - expires:.0f}s ago; get a new token", code="token_expired"
            )
        for name in ("nbf", "iat"):
            start = moment(name)
            if start is not None and start > now + leeway:
                raise _refused(
                    f"it is not valid yet ('{name}' is {start - now:.0f}s in the future); "
                    "check the clocks",
                    code="token_not_yet_valid",
                )

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        settings = self.settings
        user = claims.get(settings.user_claim)
        if not isinstance(user, str) or not user or len(user) > _MAX_TEXT:
            raise _refused(
                f"its '{settings.user_claim}' claim (auth.oidc.user_claim) is not a string "
                f"of 1 to {_MAX_TEXT} characters",
                code="invalid_token",
            )
        org = claims.get(settings.org_claim)
        if org is not None and (not isinstance(org, str) or not org or len(org) > _MAX_TEXT):
            raise _refused(
                f"its '{settings.org_claim}' claim (auth.oidc.org_claim) is not a string",
                code="invalid_token",
            )
        raw = claims.get(settings.scopes_claim)
        named = raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else []
        scopes = frozenset(s for s in named if isinstance(s, str) and s in SCOPES)
        return Principal(
            kind="oidc",
            credential=f"oidc:{user}",
            user_id=user,
            organization=org,
            scopes=scopes or frozenset(settings.default_scopes),
        )


def _parse_jwks(document: Any, *, source: str) -> dict[str, _Key]:
    entries = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(entries, list):
        raise ValueError(f"the JWKS from {source} has no 'keys' list")
    keys: dict[str, _Key] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue  # symmetric ("oct") keys are never used to verify
        try:
            key = jwt.PyJWK(dict(entry))
        except jwt.PyJWTError as exc:
            logger.warning("Skipping key %s of the JWKS from %s: %s", index, source, exc)
            continue
        alg = entry.get("alg")
        keys[str(entry.get("kid", index))] = _Key(key, alg if isinstance(alg, str) else None)
    return keys


def _unknown_kid(kid: object) -> Unauthorized:
    return _refused(
        f"its signing key '{kid}' is not among the issuer's keys (auth.oidc.jwks_url), "
        "even after a refresh",
        code="token_key_unknown",
    )


def _refused(reason: str, *, code: str) -> Unauthorized:
    return Unauthorized(f"The bearer token was refused: {reason}.", code=code)
