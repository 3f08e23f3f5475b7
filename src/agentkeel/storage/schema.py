"""What both database backends say about schema versions."""

from __future__ import annotations

from agentkeel.errors import ConfigError

__all__ = ["schema_too_new"]


def schema_too_new(where: str, *, found: int, supported: int, wrote: str) -> ConfigError:
    """The error for tables written by a newer agentkeel than this one.

    ``where`` names the store ("SQLite session store /var/lib/keel/sessions.db");
    ``wrote`` finishes "a newer version …" ("wrote the file").
    """
    return ConfigError(
        f"{where} has schema version {found} but this agentkeel understands up to "
        f"{supported}; upgrade agentkeel on this replica (a newer version {wrote})."
    )
