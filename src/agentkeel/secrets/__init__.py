"""Secret sources and the key resolution chain (files and secret directories only)."""

from agentkeel.secrets.redact import redact_url
from agentkeel.secrets.resolver import SecretResolver

__all__ = ["SecretResolver", "redact_url"]
