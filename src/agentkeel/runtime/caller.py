"""Who is calling the agent server: the ``Principal`` of a ``/v1`` request.

Three cases, in this order:

1. The request carries the router's front-door assertion (``CALLER_HEADER``): the
   replica verifies it (``FrontDoorVerifier``) and acts for the principal it
   names. A forged, expired or misaddressed one is a 401; so is any assertion at
   all on a replica that has no identity public key to check it with. The
   router already applied the caller limits, so they are not applied again.
2. Otherwise, with ``auth.enabled``, the replica is its own front door: the
   ``Authorization`` header goes through ``FrontDoor`` (API key or OIDC token)
   and the per-key and per-user limits (``CallerLimits``) apply here: the
   request rate on every ``/v1`` request, concurrent turns around each turn.
3. Otherwise (auth off) the caller is ``ANONYMOUS``, who owns every session and
   acts for the ``user_id`` a body names (local development).

>>> callers = RequestCallers(auth_enabled=True, front_door=door, verifier=None, limits=limits)
>>> caller = await callers.identify(request.headers)
>>> caller.principal.require("chat")
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import SecretStr

from agentkeel.errors import CallerAssertionRefused, InvalidRequest
from agentkeel.identity.caller_limits import CallerLimits, TurnSlot
from agentkeel.identity.forwarded import FrontDoorVerifier
from agentkeel.identity.frontdoor import FrontDoor
from agentkeel.identity.principal import (
    ANONYMOUS,
    CALLER_HEADER,
    PROVIDER_KEY_HEADER,
    Principal,
)

__all__ = ["Caller", "RequestCallers", "parse_request_keys"]


@dataclass(frozen=True, slots=True)
class Caller:
    """The verified caller of one request and what still has to be enforced here."""

    principal: Principal
    limited: bool
    """True when this replica is the front door (auth on, no assertion): the caller
    limits apply here; False behind the router (it applied them) or with auth off."""
    request_keys: Mapping[str, SecretStr] = field(default_factory=dict)
    """The caller's own provider keys for this request, where allowed (never logged)."""


class RequestCallers:
    """Turns a request's headers into a ``Caller`` (see the module doc).

    ``front_door`` and ``limits`` are used only with ``auth_enabled``; ``verifier``
    is None on a replica without an identity public key. ``allow_request_keys``
    lets an authenticated caller send its own model keys (``PROVIDER_KEY_HEADER``).
    """

    def __init__(
        self,
        *,
        auth_enabled: bool,
        front_door: FrontDoor | None,
        verifier: FrontDoorVerifier | None,
        limits: CallerLimits | None,
        allow_request_keys: bool = False,
    ) -> None:
        if auth_enabled and front_door is None:
            raise ValueError("auth is enabled: a FrontDoor is required")
        self._auth_enabled = auth_enabled
        self._front_door = front_door
        self._verifier = verifier
        self._limits = limits
        self._allow_request_keys = allow_request_keys

    async def identify(self, headers: Mapping[str, str]) -> Caller:
        """The caller of a ``/v1`` request; its request-rate limit is checked here.

        Raises ``Unauthorized`` (401), ``Forbidden`` (403) or ``RateLimited`` (429)."""
        assertion = headers.get(CALLER_HEADER)
        if assertion is not None:
            principal = self._verify(assertion)
            return Caller(
                principal, limited=False, request_keys=self._request_keys(principal, headers)
            )
        if not self._auth_enabled:
            return Caller(ANONYMOUS, limited=False)
        assert self._front_door is not None
        authorization = headers.get("authorization")
        decided = self._front_door.authenticate_now(authorization)
        principal = decided or await self._front_door.authenticate(authorization)
        if self._limits is not None:
            await self._limits.check_request(principal)
        return Caller(principal, limited=True, request_keys=self._request_keys(principal, headers))

    async def start_turn(self, caller: Caller) -> TurnSlot:
        """A concurrent-turn slot for ``caller`` (429 ``too_many_concurrent_turns`` when
        none is free); a slot that holds nothing when the limits do not apply here.
        Release it when the turn's task ends."""
        if not caller.limited or self._limits is None:
            return TurnSlot()  # holds nothing
        return await self._limits.start_turn(caller.principal)

    def _verify(self, assertion: str) -> Principal:
        if self._verifier is None:
            raise CallerAssertionRefused(
                f"The request carries a front-door assertion ({CALLER_HEADER}), but this "
                "replica has no identity public key to verify it with. Set "
                "identity.public_key_file (or identity.signing_key_file) on the replica, or "
                "send the request without that header."
            )
        return self._verifier.verify(assertion)

    def _request_keys(
        self, principal: Principal, headers: Mapping[str, str]
    ) -> Mapping[str, SecretStr]:
        if not self._allow_request_keys or principal.anonymous:
            return {}
        raw = headers.get(PROVIDER_KEY_HEADER)
        return parse_request_keys(raw) if raw else {}


def parse_request_keys(raw: str) -> dict[str, SecretStr]:
    """``<provider>=<key>[, <provider>=<key>…]`` as provider name -> key.

    A malformed entry is a 422 that names its position and the expected form, never
    the value.

    >>> parse_request_keys("openai=sk-1, anthropic=sk-2")["openai"].get_secret_value()
    'sk-1'
    """
    keys: dict[str, SecretStr] = {}
    for position, entry in enumerate(raw.split(","), start=1):
        provider, sep, key = entry.strip().partition("=")
        provider, key = provider.strip(), key.strip()
        if not sep or not provider or not key:
            raise InvalidRequest(
                f"{PROVIDER_KEY_HEADER}: entry {position} is not '<provider>=<key>'. Send "
                "one '<provider>=<key>' per provider, separated by commas."
            )
        if provider in keys:
            raise InvalidRequest(
                f"{PROVIDER_KEY_HEADER}: provider '{provider}' is named twice; send one key "
                "per provider."
            )
        keys[provider] = SecretStr(key)
    return keys
