"""Audit lines: one log record per administrative action, in the ``audit`` category.

Every service writes them through :func:`audit`, so they share one shape:
``category: "audit"``, the ``action``, the ``actor`` (a credential's name and
fingerprint, never the secret), the ``outcome``, the correlation id (added by
the JSON formatter, or a ``correlation_id=`` detail) and the action's own
details. A ``source=`` detail names the caller's remote address. Where a
process installed the audit file (``audit_file.install_audit_file``), each
call also appends one hash-chained record to it, and raises
``AuditUnavailable`` when that fails (fail-closed).

>>> audit("sessions.forget", actor=credential_id("admin_token", token), user_id="ana",
...       sessions=3)
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["AUDIT_LOGGER", "AUDIT_PAYLOAD", "audit", "audited", "credential_id"]

AUDIT_LOGGER = "agentkeel.audit"

AUDIT_PAYLOAD = "_audit"
"""The log record attribute holding the action, actor, outcome and details as given
(the JSON formatter skips names starting with ``_``)."""

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
            AUDIT_PAYLOAD: {
                "action": action,
                "actor": actor,
                "outcome": outcome,
                "details": details,
            },
            **{f"audit_{key}" if key in _CLASHES else key: value for key, value in details.items()},
        },
    )


@contextmanager
def audited(action: str, *, actor: str, **details: Any) -> Iterator[dict[str, Any]]:
    """Audit the block as ``action``: outcome ``ok``, or the error's code (``failed``
    for anything without one) when it raises. The yielded dict takes more details.

    >>> with audited("memory.fence.up", actor=who, source=remote) as more:
    ...     more["already_fenced"] = not gate.raise_fence(reason)
    """
    extra: dict[str, Any] = {}
    try:
        yield extra
    except BaseException as exc:
        outcome = str(getattr(exc, "code", None) or "failed")
        audit(action, actor=actor, outcome=outcome, **details, **extra)
        raise
    audit(action, actor=actor, **details, **extra)


# Attribute names a LogRecord already has: ``extra`` may not set them.
_CLASHES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
