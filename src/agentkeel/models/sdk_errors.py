"""One conversion of a vendor SDK's exception into a ``ProviderError``.

The openai and anthropic SDKs share one error hierarchy shape (timeout,
connection, status, response validation), so both providers convert through
``convert_sdk_error`` with their own SDK module.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import ModuleType

from agentkeel.errors import ProviderError, ProviderRateLimited, ProviderTimeout
from agentkeel.resilience.retry import parse_retry_after


def convert_sdk_error(
    exc: Exception, *, sdk: ModuleType, provider: str, where: str, timeout_s: float
) -> ProviderError:
    """The SDK's error as a ProviderError saying whether a retry may help.

    ``where`` names the endpoint and model for the message, e.g.
    ``"http://127.0.0.1:8090/v1 (model 'smollm2')"``.
    """
    if isinstance(exc, sdk.APITimeoutError):
        return ProviderTimeout(
            f"timeout after {timeout_s:g}s waiting for {where}", provider=provider, retryable=True
        )
    if isinstance(exc, sdk.APIConnectionError):
        return ProviderError(
            f"cannot reach {where}: {exc.__cause__ or exc}; is the endpoint running and reachable?",
            provider=provider,
            retryable=True,
        )
    if isinstance(exc, sdk.APIStatusError):
        status: int = exc.status_code
        retry_after = retry_after_from(exc.response.headers)
        detail = shorten(exc.message)
        if status == 429:
            after = f", retry after {retry_after:g}s" if retry_after is not None else ""
            return ProviderRateLimited(
                f"rate limited (HTTP 429{after}) by {where}: {detail}",
                provider=provider,
                retryable=True,
                retry_after=retry_after,
                status_code=status,
            )
        if status in (401, 403):
            return ProviderError(
                f"HTTP {status} from {where}: {detail}; check the API key file "
                "(models[].api_key_file or api_key_secret)",
                provider=provider,
                status_code=status,
            )
        # Any 5xx (Anthropic's 529 "overloaded" included), 408 and 409 may pass.
        return ProviderError(
            f"HTTP {status} from {where}: {detail}",
            provider=provider,
            retryable=status >= 500 or status in (408, 409),
            retry_after=retry_after,
            status_code=status,
        )
    if isinstance(exc, sdk.APIResponseValidationError):
        return ProviderError(
            f"unreadable reply from {where}: {shorten(str(exc))}",
            provider=provider,
            status_code=exc.status_code,
        )
    # An error event inside a stream, or another API-level failure.
    return ProviderError(
        f"error from {where}: {shorten(str(exc))}", provider=provider, retryable=True
    )


def retry_after_from(headers: Mapping[str, str]) -> float | None:
    """Retry-After from response headers (``retry-after-ms`` wins when present)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"), now=time.time())


def shorten(text: str, limit: int = 300) -> str:
    """One line of at most ``limit`` characters, for error messages."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
