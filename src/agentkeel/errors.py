"""The agentkeel exception tree.

Every error a caller can cause or an operator must act on maps to one stable
``code`` and one HTTP status, so the HTTP layer renders them the same way
everywhere: ``{"error": {"code": ..., "message": ...}}``.

    KeelError
    ├── ConfigError                    bad settings, unknown agent import path
    ├── SecretError                    a secret that cannot be read
    ├── RequestError (400/422)         the caller sent something we cannot use
    │   ├── InputEmpty (422)
    │   ├── InputTooLarge (413)
    │   └── InvalidRequest (422)
    ├── NotFound (404)
    ├── SessionEnded (410)             a turn or change on a session that has ended
    ├── Unauthorized (401) / Forbidden (403)
    │   └── CallerAssertionRefused (401) a signed caller identity that does not verify
    ├── Conflict (409)
    │   └── TurnInProgress (409)
    ├── LimitExceeded (429, Retry-After)
    │   ├── TurnLimitReached
    │   ├── TokenBudgetExhausted      the session's token budget
    │   ├── QuotaExhausted            a user's or organization's daily / monthly quota
    │   └── RateLimited
    ├── Unavailable (503)
    │   ├── Draining
    │   ├── ModelUnavailable          every provider in the chain failed or is open
    │   ├── ToolServerUnavailable     an MCP tool server cannot be reached
    │   ├── MemoryUnavailable         the memory server cannot answer a read now
    │   └── AuditUnavailable          an admin action's audit record could not be written
    └── ProviderError                  one provider failed one call (retried / fallen back)
        ├── ProviderTimeout
        └── ProviderRateLimited
"""

from __future__ import annotations


class KeelError(Exception):
    """Base of every agentkeel error; carries a stable code and an HTTP status."""

    code: str = "internal_error"
    status: int = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class ConfigError(KeelError):
    code = "config_error"
    status = 500


class SecretError(KeelError):
    code = "secret_error"
    status = 500


class RequestError(KeelError):
    code = "bad_request"
    status = 400


class InvalidRequest(RequestError):
    code = "invalid_request"
    status = 422


class InputEmpty(RequestError):
    code = "input_empty"
    status = 422


class InputTooLarge(RequestError):
    code = "input_too_large"
    status = 413


class NotFound(KeelError):
    code = "not_found"
    status = 404


class SessionEnded(KeelError):
    """The session has ended (deleted, idle past the timeout, or past its maximum
    duration) and takes no more turns; the message says when and why."""

    code = "session_ended"
    status = 410


class Unauthorized(KeelError):
    code = "unauthorized"
    status = 401
    www_authenticate: str | None = None
    """The ``WWW-Authenticate`` value to answer with, when the raiser knows it."""


class CallerAssertionRefused(Unauthorized):
    """A caller assertion that is missing where required, badly signed, expired, made
    for another audience or tool, or used twice. The message says which."""

    code = "caller_assertion_refused"


class Forbidden(KeelError):
    code = "forbidden"
    status = 403


class Conflict(KeelError):
    code = "conflict"
    status = 409


class TurnInProgress(Conflict):
    code = "turn_in_progress"


class LimitExceeded(KeelError):
    """A limit was hit; ``retry_after`` (seconds) becomes the Retry-After header."""

    code = "limit_exceeded"
    status = 429

    def __init__(self, message: str, *, retry_after: float | None = None, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class TurnLimitReached(LimitExceeded):
    code = "turn_limit_reached"


class TokenBudgetExhausted(LimitExceeded):
    code = "token_budget_exhausted"


class QuotaExhausted(LimitExceeded):
    """A user's or an organization's token quota for the UTC day or month has no room for
    the call; ``retry_after`` is the time until that window resets. ``scope`` (``user`` or
    ``organization``), ``period`` (``day`` or ``month``) and ``limit`` say which quota."""

    code = "quota_exhausted"

    def __init__(
        self,
        message: str,
        *,
        scope: str,
        period: str,
        limit: int,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.scope = scope
        self.period = period
        self.limit = limit


class RateLimited(LimitExceeded):
    code = "rate_limited"


class Unavailable(KeelError):
    code = "unavailable"
    status = 503

    def __init__(self, message: str, *, retry_after: float | None = None, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class Draining(Unavailable):
    code = "draining"


class ModelUnavailable(Unavailable):
    code = "model_unavailable"


class AuditUnavailable(Unavailable):
    """The audit file could not be written, so the administrative action is refused
    (or, when it already ran, reported as unrecorded)."""

    code = "audit_unavailable"


class ToolServerUnavailable(Unavailable):
    """An MCP tool server did not answer (connection refused, reset, bad response).
    The tools client turns it into a failed tool result the model reads."""

    code = "tool_server_unavailable"


class MemoryUnavailable(Unavailable):
    """The memory server cannot answer now (down, unreachable, breaker open). Reads
    raise it at once; writes go to the local outbox instead, so an agent that
    catches it can answer without its memories."""

    code = "memory_unavailable"


class ProviderError(KeelError):
    """One provider failed one call. ``retryable`` says whether a retry may help."""

    code = "provider_error"
    status = 502

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        retryable: bool = False,
        retry_after: float | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.retryable = retryable
        self.retry_after = retry_after
        self.status_code = status_code


class ProviderTimeout(ProviderError):
    code = "provider_timeout"


class ProviderRateLimited(ProviderError):
    code = "provider_rate_limited"
