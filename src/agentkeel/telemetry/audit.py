"""Audit lines: one log record per administrative action, in the ``audit`` category.

Every service writes them through :func:`audit`, so they share one shape:
``category: "audit"``, the ``action``, the ``actor`` (a credential's name and
fingerprint, never the secret), the ``outcome``, the correlation id (added by
the JSON formatter) and the action's own details.

>>> audit("sessions.forget", actor=credential_id("admin_token", token), user_id="ana",
...       sessions=3)
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

__all__ = ["AUDIT_LOGGER", "audit", "credential_id"]

AUDIT_LOGGER = "agentkeel.audit"

_FINGERPRINT_CHARS = 12


def credential_id(name: str, secret: str) -> str:
    """``name`` and a short SHA-256 fingerprint of ``secret``: tells rotated tokens apart
    in the audit trail without revealing them."""
    digest = hashlib.sha256(secret.encode()).hexdigest()[:_FINGERPRINT_CHARS]
    return f"{name}:sha256:{digest}"


def audit(action: str, *, actor: str, outcome: str = "ok", **details: Any) -> None:
    """Write the audit line for ``action`` done by ``actor``; ``details`` become fields."""
    summary = ", ".join(f"{key}={value}" for key, value in details.items())
    logging.getLogger(AUDIT_LOGGER).info(
        "audit: %s by %s: %s%s",
        action,
        actor,
        outcome,
        f" ({summary})" if summary else "",
        extra={
            "category": "audit",
            "action": action,
            "actor": actor,
            "outcome": outcome,
            **{f"audit_{key}" if key in _CLASHES else key: value for key, value in details.items()},
        },
    )


# Attribute names a LogRecord already has: ``extra`` may not set them.
_CLASHES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
