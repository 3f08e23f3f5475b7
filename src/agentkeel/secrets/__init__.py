"""Secret sources, the key resolution chain, and the values a process must never print."""

from agentkeel.secrets.call_context import CallContext, call_context, current_call_context
from agentkeel.secrets.known import KnownSecrets
from agentkeel.secrets.redact import redact_url
from agentkeel.secrets.resolver import SecretResolver
from agentkeel.secrets.source import (
    Secret,
    SecretSource,
    SecretVersion,
    WritableSecretSource,
)

__all__ = [
    "CallContext",
    "KnownSecrets",
    "Secret",
    "SecretResolver",
    "SecretSource",
    "SecretVersion",
    "WritableSecretSource",
    "call_context",
    "current_call_context",
    "redact_url",
]
