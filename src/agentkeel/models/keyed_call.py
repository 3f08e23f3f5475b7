"""One model call through the provider's key chain, and which key paid for it.

Both SDK providers (openai, anthropic) send each call with the key the chain
picks (the user's own, the organization's or the platform's) and report that
link on the response (``ModelResponse.key_link``), so usage counts every call
and spend only the platform's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

from agentkeel.models.types import ModelResponse
from agentkeel.secrets.keychain import ProviderKeys

_C = TypeVar("_C")


async def complete_with_keys(
    keys: ProviderKeys | None, client: _C, complete: Callable[[_C], Awaitable[ModelResponse]]
) -> ModelResponse:
    """``complete(client)`` with the chain's key and its link on the response; without a
    key chain, with the client as it is (and the default platform link).

    >>> response = await complete_with_keys(keys, client, lambda c: self._complete_with(c, ...))
    """
    if keys is None:
        return await complete(client)
    served = await keys.run_client_served(client, complete)
    return replace(served.value, key_link=served.link)
