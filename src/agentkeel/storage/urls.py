"""Store URLs: which backend a URL names, and how to show one without its password.

Both the session store and the memory store take the same forms, so an
operator writes them the same way in ``store.url`` and ``memory.store_url``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from agentkeel.errors import ConfigError
from agentkeel.secrets.redact import redact_url

__all__ = ["ACCEPTED_URLS", "PostgresUrl", "SqlitePath", "parse_store_url", "redact_url"]

ACCEPTED_URLS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, a bare file path, "
    "or postgresql://USER@HOST:PORT/DATABASE (postgres:// also works)"
)
# A URL scheme, but not a one-letter Windows drive such as C:.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_SQLITE_PREFIX = "sqlite:///"


@dataclass(frozen=True, slots=True)
class SqlitePath:
    """A URL that names a SQLite file."""

    path: Path


@dataclass(frozen=True, slots=True)
class PostgresUrl:
    """A URL that names a PostgreSQL database (passed to libpq as written)."""

    url: str


def parse_store_url(url: str, *, what: str) -> SqlitePath | PostgresUrl:
    """The backend ``url`` names; ``what`` names the URL in errors ("memory store URL").

    ``sqlite:///rel.db`` is relative to the working directory and
    ``sqlite:////var/lib/keel/x.db`` absolute (as in SQLAlchemy); a bare path
    is a SQLite file too; ``postgresql://`` and ``postgres://`` name
    PostgreSQL. Anything else is a ``ConfigError`` naming the value (without
    its password) and the accepted forms.
    """
    value = url.strip()
    if not value:
        raise ConfigError(f"{what} is empty; use {ACCEPTED_URLS}")
    match = _SCHEME.match(value)
    if match is None:
        return SqlitePath(Path(value).expanduser())
    scheme = match.group(1).lower()
    if scheme in ("postgresql", "postgres"):
        return PostgresUrl(value)
    if scheme == "sqlite":
        prefix = value[: len(_SQLITE_PREFIX)].lower()
        path = value[len(_SQLITE_PREFIX) :]
        if prefix != _SQLITE_PREFIX or not path or "?" in path:
            raise ConfigError(
                f"{what} {value!r} is not a SQLite URL agentkeel understands; "
                f"write it as {ACCEPTED_URLS}"
            )
        return SqlitePath(Path(path).expanduser())
    raise ConfigError(
        f"{what} {redact_url(value)!r} has unsupported scheme {scheme!r}; use {ACCEPTED_URLS}"
    )
