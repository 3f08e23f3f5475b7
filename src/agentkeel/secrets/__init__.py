"""Secret sources, the key resolution chain, and the values a process must never print."""

from agentkeel.secrets.cache import CachedSecretSource
from agentkeel.secrets.call_context import CallContext, call_context, current_call_context
from agentkeel.secrets.files import FileSecretSource
from agentkeel.secrets.known import KnownSecrets
from agentkeel.secrets.paths import check_path, format_path, quote_segment
from agentkeel.secrets.redact import redact_url
from agentkeel.secrets.resolver import SecretResolver
from agentkeel.secrets.source import (
    Secret,
    SecretSource,
    SecretVersion,
    WritableSecretSource,
    require,
)

__all__ = [
    "CachedSecretSource",
    "CallContext",
    "FileSecretSource",
    "KnownSecrets",
    "Secret",
    "SecretResolver",
    "SecretSource",
    "SecretVersion",
    "WritableSecretSource",
    "call_context",
    "check_path",
    "current_call_context",
    "format_path",
    "quote_segment",
    "redact_url",
    "require",
]
