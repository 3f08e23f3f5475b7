"""``RouterSettings``: the session-aware router (``router:``; ``keel serve router``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["Backend", "RouterSettings", "parse_backend"]

BACKEND_FORM = "VERSION=http://HOST:PORT (e.g. v1=http://127.0.0.1:8081)"


class Backend(BaseModel):
    """One replica the router starts with: its version and base URL."""

    model_config = ConfigDict(frozen=True)

    version: str
    url: str


def parse_backend(text: str) -> Backend:
    """``v1=http://127.0.0.1:8081`` as a ``Backend``; ``ValueError`` naming the form."""
    version, sep, url = text.partition("=")
    version, url = version.strip(), url.strip().rstrip("/")
    if not sep or not version or not url:
        raise ValueError(f"backend {text!r} is not {BACKEND_FORM}")
    check_replica_url(url)
    return Backend(version=version, url=url)


def check_replica_url(url: str) -> str:
    """A replica URL the router can reach: ``http://host:port`` with no path."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(
            f"replica URL {url!r} is not http://HOST:PORT (the router speaks plain HTTP to "
            "replicas; put TLS in front of the router, not behind it)"
        )
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise ValueError(f"replica URL {url!r} has an invalid port") from exc
    return url.rstrip("/")


class RouterSettings(BaseModel):
    """The router in front of the agent replicas.

    ``backends`` seeds the routing table when the pin store holds none yet; after
    that the table (versions, weights, replicas, stable) lives in the store and
    changes through the admin API, so a restarted router keeps what was changed.
    """

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    backends: list[str] = Field(
        default_factory=list,
        description="Replicas as VERSION=URL; the first version named is the stable one "
        "(weight 100). Used only while the pin store holds no routing table.",
    )
    pins: str | None = Field(
        default=None,
        description="Pin table and routing table: sqlite:///PATH.db (one router) or "
        "redis://HOST:PORT/DB (routers sharing it); unset = sqlite in data_dir/router.db.",
    )
    redis_prefix: str = Field(
        default="agentkeel:router",
        min_length=1,
        description="Key prefix in Redis; routers that share one table share the prefix.",
    )
    admin_token_file: Path | None = Field(
        default=None, description="File holding the admin API's bearer token."
    )
    admin_token_secret: str = Field(
        default="admin_token", description="The token's name in secrets_dir."
    )
    probe_interval_s: float = Field(
        default=0.5, gt=0, description="Every replica's /ready is probed this often."
    )
    probe_timeout_s: float = Field(default=1.0, gt=0)
    lookup_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Reading an unpinned session's version from a replica gives up after this.",
    )
    connect_timeout_s: float = Field(default=2.0, gt=0)
    upstream_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="A replica silent this long within one response is given up on "
        "(504 if nothing was sent to the client yet).",
    )
    upstream_idle_s: float = Field(
        default=4.0,
        gt=0,
        description="Pooled idle connections are closed after this; keep it below the "
        "replicas' keep-alive timeout (uvicorn: 5 s).",
    )
    pool_size: int = Field(default=64, ge=1, description="Idle connections kept per replica.")
    client_idle_s: float = Field(
        default=75.0, gt=0, description="An idle client connection is closed after this."
    )
    retry_after_s: float = Field(
        default=1.0, gt=0, description="Retry-After on the router's own 503 answers."
    )
    pin_ttl_s: float = Field(
        default=172_800.0,
        gt=0,
        description="A pin expires this long after it was written (longer than "
        "sessions.max_duration_s, so a live session never loses its pin).",
    )
    pin_cache_size: int = Field(default=100_000, ge=1, description="Pins kept in memory.")
    table_refresh_s: float = Field(
        default=0.5, gt=0, description="The routing table is reread from the store this often."
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1, description="Larger requests: 413.")
    max_header_bytes: int = Field(
        default=65_536, ge=1024, description="Request line and headers above this: 431."
    )
    drain_timeout_s: float = Field(
        default=30.0, ge=0, description="On SIGTERM, requests in flight get this long."
    )

    @field_validator("backends")
    @classmethod
    def _check_backends(cls, value: list[str]) -> list[str]:
        seen: dict[str, str] = {}
        for text in value:
            backend = parse_backend(text)
            if seen.get(backend.url, backend.version) != backend.version:
                raise ValueError(
                    f"replica {backend.url} is listed for versions {seen[backend.url]!r} and "
                    f"{backend.version!r}; a replica serves one version"
                )
            seen[backend.url] = backend.version
        return value

    def backend_list(self) -> list[Backend]:
        """``backends`` parsed, in order."""
        return [parse_backend(text) for text in self.backends]
