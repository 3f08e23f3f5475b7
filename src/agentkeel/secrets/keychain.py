"""Which API key a model call uses: the user's own, the organization's, or the platform's.

For a call to provider P made inside a turn (a ``CallContext`` is set), the key
is the first of:

1. ``byok``: the user's own key — the one sent with the request
   (``CallContext.request_keys[P]``, only with ``key_chain.allow_request_keys``),
   else the source's ``byok/<user>/<P>``;
2. ``org``: the organization's, ``orgs/<org>/<P>``;
3. ``platform``: the provider's own key (``models[].api_key_file`` or
   ``api_key_secret``), or none for a keyless local server.

Outside a turn only the platform key is used. With versions (a rotation under
way) the session's start picks one (``Secret.for_start``). Which link served
the call is logged and counted (``agent_model_key_link_total{provider, link}``);
the key never is.

A user's own key that the provider rejects (401/403) fails that user's call
with 403 ``byok_rejected``: the platform key is not used in its place (the user
would silently be billed to the platform), nor is another provider — unless
``key_chain.byok_fallthrough`` says to go on down the chain.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar, cast

from pydantic import SecretStr

from agentkeel.config.secrets import KeyChainSettings
from agentkeel.errors import Forbidden, ProviderError
from agentkeel.secrets.cache import CachedSecretSource
from agentkeel.secrets.call_context import CallContext, current_call_context
from agentkeel.secrets.paths import format_path
from agentkeel.secrets.source import Secret

logger = logging.getLogger(__name__)

KeyLink = Literal["byok", "org", "platform"]
KEY_LINKS: tuple[KeyLink, ...] = ("byok", "org", "platform")

_REJECTED = frozenset({401, 403})
_T = TypeVar("_T")
_C = TypeVar("_C")


class KeyLinkCounter(Protocol):
    """Where served calls are counted (``ModelMetrics`` is one)."""

    def key_link_served(self, provider: str, link: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ModelKey:
    """One candidate key for a call; ``value`` is ``None`` for a keyless platform link."""

    link: KeyLink
    value: SecretStr | None
    generation: int | None = None


@dataclass(frozen=True, slots=True)
class Served(Generic[_T]):
    """A call's result and the key chain link that served it (``ProviderKeys.run_served``)."""

    value: _T
    link: KeyLink


@dataclass(frozen=True, slots=True)
class PlatformKey:
    """Where a provider's own key is: ``path`` in ``source``; ``None`` source = keyless."""

    source: CachedSecretSource | None
    path: str | None


class KeyChain:
    """Picks the key of each model call (see the module doc); one per gateway.

    >>> chain = KeyChain(source=source, settings=settings.secrets.key_chain,
    ...     counter=model_metrics)
    >>> keys = chain.for_provider("openai", PlatformKey(source, "openai_api_key"))
    >>> served = await keys.run_served(lambda key: call_the_api(key))
    """

    def __init__(
        self,
        *,
        source: CachedSecretSource | None,
        settings: KeyChainSettings,
        counter: KeyLinkCounter | None = None,
    ) -> None:
        self.source = source
        self.settings = settings
        self._counter = counter

    def for_provider(self, provider: str, platform: PlatformKey) -> ProviderKeys:
        return ProviderKeys(chain=self, provider=provider, platform=platform)

    def _count(self, provider: str, link: KeyLink) -> None:
        if self._counter is not None:
            self._counter.key_link_served(provider, link)


class ProviderKeys:
    """The key chain of one provider: ``candidates()`` and ``run(call)``."""

    def __init__(self, *, chain: KeyChain, provider: str, platform: PlatformKey) -> None:
        self._chain = chain
        self.provider = provider
        self.platform = platform

    async def candidates(self) -> list[ModelKey]:
        """The keys to try, in order: only the first unless a rejected user's key may
        fall through to the next."""
        context = current_call_context()
        settings = self._chain.settings
        found: list[ModelKey] = []
        if context is not None:
            byok = await self._byok(context)
            if byok is not None:
                found.append(byok)
                if not settings.byok_fallthrough:
                    return found
            org = await self._org(context)
            if org is not None:
                return [*found, org]
        found.append(await self._platform(context))
        return found

    async def run_client_served(
        self, client: _C, call: Callable[[_C], Awaitable[_T]]
    ) -> Served[_T]:
        """``call`` with an SDK client (openai, anthropic) that sends the chain's key (a
        per-call key gets a copy of ``client`` that shares its connection pool), and which
        link's key served it (what providers report as ``ModelResponse.key_link``)."""

        async def with_key(key: SecretStr | None) -> _T:
            if key is None:
                return await call(client)
            # Both SDKs' clients copy themselves with with_options(api_key=...).
            return await call(cast(Any, client).with_options(api_key=key.get_secret_value()))

        return await self.run_served(with_key)

    async def run_served(self, call: Callable[[SecretStr | None], Awaitable[_T]]) -> Served[_T]:
        """``call`` with the chain's key, and which link's key served it; a rejected user's
        key is a 403 ``byok_rejected`` (or, with ``byok_fallthrough``, the next link's try)."""
        candidates = await self.candidates()
        for index, key in enumerate(candidates):
            try:
                result = await call(key.value)
            except ProviderError as exc:
                if key.link != "byok" or exc.status_code not in _REJECTED:
                    raise
                if index + 1 < len(candidates):
                    logger.warning(
                        "Model provider %s rejected the user's own key (HTTP %s); "
                        "byok_fallthrough: trying the %s key",
                        self.provider,
                        exc.status_code,
                        candidates[index + 1].link,
                    )
                    continue
                raise Forbidden(
                    f"Model provider '{self.provider}' rejected your own API key "
                    f"(HTTP {exc.status_code}); the call was not made with the platform key "
                    "or another provider. Replace or remove your key for this provider.",
                    code="byok_rejected",
                ) from exc
            logger.info(
                "Model call to %s served with the %s key",
                self.provider,
                key.link,
                extra={"key_link": key.link, "key_generation": key.generation},
            )
            self._chain._count(self.provider, key.link)
            return Served(value=result, link=key.link)
        raise AssertionError("unreachable")  # pragma: no cover - candidates is never empty

    async def _byok(self, context: CallContext) -> ModelKey | None:
        sent = context.request_keys.get(self.provider)
        if sent is not None:
            if self._chain.settings.allow_request_keys:
                return ModelKey(link="byok", value=sent)
            logger.warning(
                "A user's key for %s came with the request but "
                "secrets.key_chain.allow_request_keys is off; it is ignored",
                self.provider,
            )
        settings = self._chain.settings
        if context.organization:
            path = format_path(
                settings.org_byok_path,
                org=context.organization,
                user=context.user_id,
                provider=self.provider,
            )
        else:
            path = format_path(settings.byok_path, user=context.user_id, provider=self.provider)
        return await self._stored("byok", path, context)

    async def _org(self, context: CallContext) -> ModelKey | None:
        if not context.organization:
            return None
        path = format_path(
            self._chain.settings.org_path, org=context.organization, provider=self.provider
        )
        return await self._stored("org", path, context)

    async def _platform(self, context: CallContext | None) -> ModelKey:
        source, path = self.platform.source, self.platform.path
        if source is None or path is None:
            return ModelKey(link="platform", value=None)
        secret = await source.aread(path)
        if secret is None:
            return ModelKey(link="platform", value=None)
        return _pick("platform", secret, context)

    async def _stored(self, link: KeyLink, path: str, context: CallContext) -> ModelKey | None:
        source = self._chain.source
        if source is None:
            return None
        secret = await source.aread(path)
        return None if secret is None else _pick(link, secret, context)


def _pick(link: KeyLink, secret: Secret, context: CallContext | None) -> ModelKey:
    version = secret.current if context is None else secret.for_start(context.session_started_at)
    return ModelKey(link=link, value=version.value, generation=version.generation)
