"""What the hash chains share (the memory event log, the audit file): one text form
of a JSON value, and the hash before the first link."""

from __future__ import annotations

import json
from typing import Any

GENESIS_HASH = "0" * 64
"""The previous hash of a chain's first link."""


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, no escapes beyond JSON's own, no NaN: the same text for the
    same value on every machine."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
