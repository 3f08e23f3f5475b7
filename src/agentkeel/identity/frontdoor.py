"""The front door: an ``Authorization`` header in, a ``Principal`` out.

``Authorization: Bearer ak_…`` is an API key (``apikeys.py``); any other bearer
token is an OIDC JWT when ``auth.oidc`` is configured (``oidc.py``). With
``auth.enabled: false`` every caller is ``ANONYMOUS``.

Refusals are ``Unauthorized`` (401) with a code (``unauthenticated``,
``key_unknown``, ``key_expired``, ``key_revoked``, ``token_*``) and carry
``www_authenticate``, the ``WWW-Authenticate`` value a server should send back.

>>> door = FrontDoor(settings.auth, secrets=SecretResolver(), data_dir=Path(".keel"))
>>> principal = door.authenticate_now(request.headers.get("authorization"))
>>> if principal is None:
...     principal = await door.authenticate(request.headers.get("authorization"))
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from agentkeel.config.auth import AuthSettings
from agentkeel.errors import Unauthorized
from agentkeel.identity.apikeys import ApiKeys, looks_like_api_key
from agentkeel.identity.oidc import OidcVerifier
from agentkeel.identity.principal import ANONYMOUS, Principal, bearer_challenge
from agentkeel.secrets.resolver import SecretResolver
from agentkeel.web.auth import bearer_token


class FrontDoor:
    """Turns an Authorization header into a Principal.

    >>> door = FrontDoor(AuthSettings(enabled=True), secrets=SecretResolver(),
    ...     data_dir=Path(".keel"))
    >>> door.authenticate_now("Bearer ak_3kq9x2mz_...").credential
    'api_key:ci'
    """

    def __init__(
        self,
        settings: AuthSettings,
        *,
        secrets: SecretResolver,
        data_dir: Path,
        clock: Callable[[], float] | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.api_keys_path = settings.api_keys_path(
            secrets_dir=secrets.secrets_dir, data_dir=data_dir
        )
        self._api_keys = ApiKeys(self.api_keys_path, clock=clock)
        self._oidc = (
            OidcVerifier(settings.oidc, clock=clock, http=http)
            if settings.oidc.configured
            else None
        )

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def authenticate_now(self, authorization: str | None) -> Principal | None:
        """Sync: the principal when it can be decided without I/O (API key; JWT with a
        cached kid); None when it needs awaiting (JWKS fetch/refresh). Raises
        Unauthorized/Forbidden. Disabled → ANONYMOUS."""
        if not self.settings.enabled:
            return ANONYMOUS
        token = self._token(authorization)
        try:
            if looks_like_api_key(token):
                return self._api_keys.authenticate(token)
            return self._oidc_verifier().verify_now(token)
        except Unauthorized as exc:
            raise _challenged(exc) from None

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal of ``authorization``, fetching the issuer's keys when needed."""
        principal = self.authenticate_now(authorization)
        if principal is not None:
            return principal
        token = self._token(authorization)
        try:
            return await self._oidc_verifier().verify(token)
        except Unauthorized as exc:
            raise _challenged(exc) from None

    async def aclose(self) -> None:
        if self._oidc is not None:
            await self._oidc.aclose()

    def _token(self, authorization: str | None) -> str:
        token = bearer_token(authorization)
        if token is None:
            raise _challenged(
                Unauthorized(
                    "This endpoint needs 'Authorization: Bearer <credential>': "
                    f"{self._accepted()}.",
                    code="unauthenticated",
                )
            )
        return token

    def _oidc_verifier(self) -> OidcVerifier:
        if self._oidc is None:
            raise Unauthorized(
                "The bearer token is not an API key (those start with 'ak_') and this "
                "service accepts no OIDC tokens (auth.oidc.issuer is not set). Send an API key "
                "made by `keel keys create`.",
                code="key_unknown",
            )
        return self._oidc

    def _accepted(self) -> str:
        accepted = "an API key made by `keel keys create` (ak_…)"
        if self._oidc is not None:
            accepted += f" or an OIDC token from {self.settings.oidc.issuer}"
        return accepted


def _challenged(exc: Unauthorized) -> Unauthorized:
    """``exc`` with the ``WWW-Authenticate`` value of RFC 6750 attached."""
    exc.www_authenticate = bearer_challenge(invalid=exc.code != "unauthenticated")
    return exc
