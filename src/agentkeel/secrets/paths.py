"""Secret paths: slash-separated, relative, with segments that are safe file names.

Every source checks a path with ``check_path`` before touching a file or a Vault
entry, so ``../`` or an absolute path can never reach outside the source's root.
Values that come from callers (user ids, organization names) go into a path
through ``quote_segment``, which percent-encodes anything that is not a plain
file-name character.

>>> quote_segment("ana@example.com"), quote_segment("../etc")
('ana@example.com', '%2E%2E%2Fetc')
>>> check_path("byok/ana/openai")
'byok/ana/openai'
"""

from __future__ import annotations

import re
from urllib.parse import quote

from agentkeel.errors import SecretError

_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_@+=,%~-][A-Za-z0-9_@+=,%~.-]*")
_MAX_SEGMENT = 200


def check_path(path: str) -> str:
    """``path`` when it is relative, has no empty, ``.``/``..`` or hidden segment and only
    file-name characters; a ``SecretError`` that says what is wrong otherwise."""
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        raise SecretError(
            f"The secret path {path!r} is not a relative slash-separated path "
            "(like 'orgs/acme/openai')."
        )
    for segment in path.split("/"):
        if not _SAFE_SEGMENT.fullmatch(segment) or len(segment) > _MAX_SEGMENT:
            raise SecretError(
                f"The secret path {path!r} has the segment {segment!r}: a segment is 1-200 of "
                "A-Z a-z 0-9 _ @ + = , % ~ . - and does not start with '.'; quote values from "
                "callers with quote_segment()."
            )
    return path


def quote_segment(value: str) -> str:
    """``value`` as one path segment: percent-encoded where it is not a safe file name."""
    if not value:
        raise SecretError("An empty value cannot be a secret path segment (a user id, ...).")
    quoted = quote(value, safe="@+=,-_")
    # A leading dot would make a hidden file (or '..'); quote() never encodes dots itself.
    return quoted.replace(".", "%2E") if quoted.startswith(".") else quoted


def format_path(template: str, **values: str) -> str:
    """``template`` (``byok/{user}/{provider}``) with each value quoted as one segment."""
    return check_path(template.format(**{k: quote_segment(v) for k, v in values.items()}))
