"""``FlagsSettings`` (``flags:``) and ``OverridesSettings`` (``overrides:``).

Feature flags are evaluated through OpenFeature with the flagd provider. With
``source: file`` (the default) each replica reads a flagd-format flag file in
process: the file is watched, validated (flagd's syntax, then keel's allowlist
of live settings and their types) and only a file that passes is put in force;
a file that fails keeps the last good flags. With ``source: flagd`` the
replicas take their flags from a flagd service, for fleets: synced over gRPC and
evaluated in process, so a turn never waits for the network. ``none`` turns
flags off.

Per-user and per-organization overrides come from one YAML file, watched the
same way; they win over flags. Only live settings (``KeelSettings.LIVE``) may
appear in either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

RPC_REFUSED = (
    "flagd_resolver 'rpc' is not supported: it asks flagd over the network for every live "
    "setting at the start of every turn, and those calls would hold up every other turn of "
    "the replica. Use flagd_resolver: in-process (the default: flagd syncs the flags to the "
    "replica, on port 8015, and each turn evaluates them locally), or remove the key."
)


class FlagsSettings(BaseModel):
    """Where the feature flags come from and how often they are checked."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["file", "flagd", "none"] = Field(
        default="file",
        description="file: a flagd-format flag file read in process; flagd: a flagd "
        "service; none: no flags.",
    )
    file: Path | None = Field(
        default=None,
        description="The flag file (JSON or YAML, flagd format); unset = <data_dir>/flags.json. "
        "A missing file means no flags until it appears.",
    )
    poll_interval_s: float = Field(
        default=1.0, gt=0, le=300, description="How often the flag file is checked for changes."
    )
    flagd_host: str = Field(default="127.0.0.1", description="source=flagd: the flagd host.")
    flagd_port: int = Field(
        default=8015,
        ge=1,
        le=65535,
        description="source=flagd: flagd's sync port (8015).",
    )
    flagd_resolver: Literal["in-process"] = Field(
        default="in-process",
        description="source=flagd: in-process, the only resolver: flags synced from flagd, "
        "evaluated in the replica (no network call per turn).",
    )
    flagd_tls: bool = Field(default=False, description="source=flagd: connect with TLS.")
    flagd_selector: str | None = Field(
        default=None, description="source=flagd: the flag set (selector) to sync."
    )

    @field_validator("flagd_resolver", mode="before")
    @classmethod
    def _no_rpc(cls, value: object) -> object:
        if value == "rpc":
            raise ValueError(RPC_REFUSED)
        return value


class OverridesSettings(BaseModel):
    """The per-user and per-organization overrides file."""

    model_config = ConfigDict(extra="forbid")

    file: Path | None = Field(
        default=None,
        description="YAML with 'organizations: {org: {key: value}}' and 'users: {user or "
        "org/user: {key: value}}'; unset = <data_dir>/overrides.yaml (optional).",
    )
