"""Who a request acts for, once its credential has been checked: a ``Principal``.

The front door (the router, or a replica served directly) turns an API key or
an OIDC token into a principal; the router hands it to the replica in a signed
front-door assertion (``CALLER_HEADER``). Everything downstream decides on the
principal, never on a ``user_id`` a body merely states.

- ``kind``: ``api_key``, ``oidc``, or ``anonymous`` (auth is off).
- ``credential``: who did it, for audit lines: ``api_key:<name>``,
  ``oidc:<subject>``, ``anonymous``. Never a secret.
- ``user_id``: the user it acts for; ``None`` for a key of an organization that
  acts for any of that organization's users (it names them in the body).
- ``organization``: the organization, when there is one.
- ``scopes``: what it may do (``SCOPES``).

>>> p = Principal(kind="api_key", credential="api_key:ci", user_id="ana",
...     organization="acme", scopes=frozenset({"chat"}))
>>> p.acting_user("ana"), p.owns("ana", "acme"), p.owns("bob", "acme")
('ana', True, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from agentkeel.errors import Forbidden, InvalidRequest

Scope = Literal["chat", "sessions:read", "admin"]
SCOPES: Final[tuple[Scope, ...]] = ("chat", "sessions:read", "admin")
"""``chat``: start sessions and run turns; ``sessions:read``: read sessions;
``admin``: the ``/admin`` routes."""

CALLER_HEADER: Final = "x-keel-caller"
"""The router's signed front-door assertion, for the replica behind it. The router
drops any client-sent copy; a replica acts only on one that verifies."""

PROVIDER_KEY_HEADER: Final = "x-keel-provider-key"
"""A user's own model key for one request (``<provider>=<key>``), where allowed."""

PrincipalKind = Literal["api_key", "oidc", "anonymous"]

REALM: Final = "agentkeel"


def bearer_challenge(*, invalid: bool) -> str:
    """The ``WWW-Authenticate`` value of a 401 (RFC 6750 3.1): no error code when no
    credential came, ``invalid_token`` when a bad one did."""
    return f'Bearer realm="{REALM}"' + (', error="invalid_token"' if invalid else "")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller (see the module doc)."""

    kind: PrincipalKind
    credential: str
    user_id: str | None
    organization: str | None
    scopes: frozenset[str]

    @property
    def anonymous(self) -> bool:
        return self.kind == "anonymous"

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes

    def require(self, scope: Scope) -> None:
        """Raise 403 ``insufficient_scope`` unless the principal has ``scope``."""
        if scope not in self.scopes:
            raise Forbidden(
                f"The credential '{self.credential}' does not have the scope '{scope}' "
                f"(it has: {', '.join(sorted(self.scopes)) or 'none'}).",
                code="insufficient_scope",
            )

    def acting_user(self, claimed: str | None) -> str:
        """The user a new session belongs to.

        A principal with a fixed user: that user; a ``claimed`` one that differs is a
        403 ``user_mismatch``. A key of an organization (no fixed user) or auth off:
        ``claimed``, which must then be given (422).
        """
        if self.user_id is not None:
            if claimed is not None and claimed != self.user_id:
                raise Forbidden(
                    f"The body names user_id '{claimed}', but the credential "
                    f"'{self.credential}' acts for another user. Leave user_id out, or use "
                    "that user's credential.",
                    code="user_mismatch",
                )
            return self.user_id
        if not claimed:
            raise InvalidRequest(
                f"The credential '{self.credential}' is not bound to one user: name the user "
                "with user_id in the body."
            )
        return claimed

    def owns(self, user_id: str, organization: str | None) -> bool:
        """Whether a session of ``user_id`` in ``organization`` is this principal's."""
        if self.anonymous:
            return True
        if (organization or None) != (self.organization or None):
            return False
        return self.user_id is None or self.user_id == user_id


ANONYMOUS: Final = Principal(
    kind="anonymous",
    credential="anonymous",
    user_id=None,
    organization=None,
    scopes=frozenset(SCOPES),
)
"""The caller when auth is off: acts for the ``user_id`` the body names, owns everything."""
