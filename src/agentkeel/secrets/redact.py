"""Hiding credentials in text that goes to logs, errors and ``keel config show``."""

from __future__ import annotations

import re

_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@/\s]+@")


def redact_url(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``.

    >>> redact_url("postgresql://keel:hunter2@db/keel")
    'postgresql://keel:***@db/keel'
    """
    return _URL_PASSWORD.sub(r"\1***@", text)
