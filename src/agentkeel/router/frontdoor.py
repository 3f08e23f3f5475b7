"""The router as the authenticated front door of the replicas (``auth.enabled``).

Every ``/v1`` request is authenticated (an API key or an OIDC token, by the
identity package's ``FrontDoor``), counted against the caller's request rate,
and a turn (``POST /v1/sessions/{id}/messages``) takes one of the caller's
concurrent-turn slots until the replica's answer has ended (streamed or not,
whatever went wrong). The client's ``Authorization`` stays at the router; the
replica gets a signed front-door assertion in ``CALLER_HEADER`` instead, added
as one header line before the head's blank line.

The router's own answers: 401 with ``WWW-Authenticate: Bearer``, 403, 429 with
``Retry-After``, in the router's error shape. ``agent_router_auth_total
{outcome}`` counts them (``ok``, ``unauthenticated``, ``forbidden``,
``rate_limited``, ``concurrency_limited``, ``unavailable``: an identity
provider that could not be reached, ``error``: a front-door failure).

The parser-callback path asks ``admit_now`` (no I/O: an API key, a JWT whose
key is cached, limits in memory); when it cannot decide, the request goes to
the awaiting path (``admit``): a JWKS refresh, limits in Redis.

>>> door = build_router_front_door(settings, secrets=SecretResolver(settings.secrets_dir))
>>> door is None                  # auth.enabled is false
True
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, Protocol

from agentkeel.errors import ConfigError, Forbidden, KeelError, LimitExceeded, Unauthorized
from agentkeel.identity.principal import (
    CALLER_HEADER,
    PROVIDER_KEY_HEADER,
    Principal,
    bearer_challenge,
)
from agentkeel.router.responses import keel_error_response, router_error
from agentkeel.telemetry.trace_context import BAGGAGE, CLIENT_CONTEXT_HEADERS

if TYPE_CHECKING:
    from agentkeel.config.settings import KeelSettings
    from agentkeel.identity.caller_limits import TurnSlot
    from agentkeel.router.connection import ClientConnection, Request
    from agentkeel.secrets.resolver import SecretResolver

__all__ = [
    "ADMITTED",
    "OUTCOMES",
    "UNDECIDED",
    "AssertionSigner",
    "Authenticator",
    "CallerLimiter",
    "RouterFrontDoor",
    "build_router_front_door",
    "stripped_headers",
]

logger = logging.getLogger("agentkeel.router")

ADMITTED: Final = 0
"""``admit_now``/``admit``: the request may go on (any other value: the status the
router answered with)."""
UNDECIDED: Final = -1
"""``admit_now``: deciding needs awaiting; ``admit`` will."""

OUTCOMES: Final = (
    "ok",
    "unauthenticated",
    "forbidden",
    "rate_limited",
    "concurrency_limited",
    "unavailable",
    "error",
)
_CONCURRENCY_CODE = "too_many_concurrent_turns"
_CALLER_PREFIX = CALLER_HEADER.encode() + b": "
_WWW_AUTHENTICATE = b"www-authenticate"


class Authenticator(Protocol):
    """Turns an ``Authorization`` header into a principal (``identity.frontdoor.FrontDoor``)."""

    def authenticate_now(self, authorization: str | None) -> Principal | None: ...

    async def authenticate(self, authorization: str | None) -> Principal: ...

    async def aclose(self) -> None: ...


class CallerLimiter(Protocol):
    """Per key and per user limits (``identity.caller_limits.CallerLimits``)."""

    @property
    def sync(self) -> bool: ...

    def check_request_now(self, principal: Principal) -> None: ...

    async def check_request(self, principal: Principal) -> None: ...

    def start_turn_now(self, principal: Principal) -> TurnSlot: ...

    async def start_turn(self, principal: Principal) -> TurnSlot: ...

    async def aclose(self) -> None: ...


class AssertionSigner(Protocol):
    """Signs the front-door assertion (``identity.forwarded.FrontDoorSigner``)."""

    def sign(self, principal: Principal) -> str: ...


def stripped_headers(
    *, allow_request_keys: bool, trust_trace_context: bool = False
) -> frozenset[bytes]:
    """Request headers a client may never pass through the router, whatever the auth
    setting: the front-door assertion (only the router signs one), a user's own model
    key unless ``secrets.key_chain.allow_request_keys``, the client's ``baggage``
    (never carried into the stack), and its ``traceparent`` and ``tracestate`` unless
    ``tracing.trust_incoming`` (the replica then starts the trace)."""
    names = {CALLER_HEADER.encode(), BAGGAGE.encode()}
    if not allow_request_keys:
        names.add(PROVIDER_KEY_HEADER.encode())
    if not trust_trace_context:
        names |= CLIENT_CONTEXT_HEADERS
    return frozenset(names)


class RouterFrontDoor:
    """Authenticates, limits and signs for the router's ``Proxy``.

    >>> door = RouterFrontDoor(authenticator=front_door, limits=caller_limits,
    ...     signer=front_door_signer)
    >>> door.admit_now(client, request, turn=True)   # ADMITTED, UNDECIDED or a status
    0
    >>> door.release(request)                        # the turn's answer has ended
    """

    def __init__(
        self, *, authenticator: Authenticator, limits: CallerLimiter, signer: AssertionSigner
    ) -> None:
        self.authenticator = authenticator
        self.limits = limits
        self.signer = signer
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)

    def admit_now(self, client: ClientConnection, request: Request, *, turn: bool) -> int:
        """Decide without awaiting: ``ADMITTED`` (the request carries its principal, a
        turn its slot, the wire the assertion), ``UNDECIDED``, or the status of the
        refusal already written to ``client``."""
        limits = self.limits
        if not limits.sync:
            return UNDECIDED
        try:
            principal = self.authenticator.authenticate_now(_text(request.authorization))
            if principal is None:
                return UNDECIDED
            limits.check_request_now(principal)
            slot = limits.start_turn_now(principal) if turn else None
        except Exception as exc:
            return self._refuse(client, request, exc)
        return self._admit(request, principal, slot)

    async def admit(self, client: ClientConnection, request: Request, *, turn: bool) -> int:
        """``admit_now`` that awaits whatever it needs: ``ADMITTED`` or a status."""
        limits = self.limits
        try:
            principal = await self.authenticator.authenticate(_text(request.authorization))
            await limits.check_request(principal)
            slot = await limits.start_turn(principal) if turn else None
        except Exception as exc:
            return self._refuse(client, request, exc)
        return self._admit(request, principal, slot)

    @staticmethod
    def release(request: Request) -> None:
        """Give back the request's turn slot, if it holds one (idempotent)."""
        slot = request.turn_slot
        if slot is not None:
            request.turn_slot = None
            slot.release()

    async def aclose(self) -> None:
        await self.authenticator.aclose()
        await self.limits.aclose()

    def _admit(self, request: Request, principal: Principal, slot: TurnSlot | None) -> int:
        try:
            token = self.signer.sign(principal)
        except Exception:
            if slot is not None:
                slot.release()
            raise
        request.principal = principal
        request.turn_slot = slot
        request.add_header(_CALLER_PREFIX + token.encode("ascii") + b"\r\n")
        self.outcomes["ok"] += 1
        return ADMITTED

    def _refuse(self, client: ClientConnection, request: Request, exc: Exception) -> int:
        """Answer ``exc`` to the client in the router's error shape; its status."""
        headers = list(request.id_header)
        if isinstance(exc, Unauthorized):
            outcome = "unauthenticated"
            challenge = exc.www_authenticate or _challenge(request)
            headers.append((_WWW_AUTHENTICATE, challenge.encode("latin-1")))
        elif isinstance(exc, Forbidden):
            outcome = "forbidden"
        elif isinstance(exc, LimitExceeded):
            outcome = "concurrency_limited" if exc.code == _CONCURRENCY_CODE else "rate_limited"
        elif isinstance(exc, KeelError) and exc.status == 503:
            outcome = "unavailable"
        elif isinstance(exc, KeelError):
            outcome = "error"
        else:
            logger.error(
                "router front door failed on a request; answered 500",
                exc_info=exc,
                extra=request.log_fields(),
            )
            self.outcomes["error"] += 1
            client.write(
                router_error(
                    500,
                    "internal_error",
                    "The router could not check this request's credentials; retry, and report "
                    f"correlation id {request.correlation_id.decode('latin-1')} if it persists.",
                    headers=headers,
                    keep_alive=request.keep_alive,
                )
            )
            return 500
        self.outcomes[outcome] += 1
        client.write(keel_error_response(exc, headers=headers, keep_alive=request.keep_alive))
        return exc.status


def _text(authorization: bytes | None) -> str | None:
    return authorization.decode("latin-1") if authorization is not None else None


def _challenge(request: Request) -> str:
    return bearer_challenge(invalid=request.authorization is not None)


def build_router_front_door(
    settings: KeelSettings, *, secrets: SecretResolver
) -> RouterFrontDoor | None:
    """The router's front door from ``auth``, ``identity`` and ``redis_url`` (limits in
    Redis, shared by every router, when it is set); ``None`` when ``auth.enabled`` is
    false. Raises ``ConfigError`` when auth is on but no identity signing key is found."""
    auth = settings.auth
    if not auth.enabled:
        return None
    from agentkeel.identity.caller_limits import CallerLimits
    from agentkeel.identity.forwarded import build_front_door_signer
    from agentkeel.identity.frontdoor import FrontDoor

    signer = build_front_door_signer(settings, secrets=secrets)
    if signer is None:
        raise ConfigError(
            "auth.enabled is true, but the router has no identity signing key to sign the "
            "front-door assertion with: set identity.signing_key_file (an Ed25519 PEM; "
            "keel up makes one in the data dir) or put it in the secrets directory as "
            f"'{settings.identity.signing_key_secret}'."
        )
    return RouterFrontDoor(
        authenticator=FrontDoor(auth, secrets=secrets, data_dir=settings.data_dir),
        limits=CallerLimits(auth.limits, storage_uri=settings.redis_url or "memory://"),
        signer=signer,
    )
