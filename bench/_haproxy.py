"""HAProxy for the router benchmark: the config rendered from
``bench/haproxy.cfg.template`` and the command that runs it in the foreground."""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

TEMPLATE = Path(__file__).with_name("haproxy.cfg.template")


@dataclass(frozen=True, slots=True)
class Server:
    """One backend HAProxy routes to; ``name`` is the version it stands for."""

    name: str
    url: str
    weight: int


def render_config(*, port: int, servers: Sequence[Server], probe_interval_ms: int = 500) -> str:
    """The HAProxy config: sticky by session id, weighted by backend, probing ``/ready``."""
    if not servers:
        raise ValueError("HAProxy needs at least one backend server")
    lines = []
    for server in servers:
        parts = urlsplit(server.url)
        lines.append(
            f"    server {server.name} {parts.hostname}:{parts.port} weight {server.weight} "
            f"check inter {probe_interval_ms}"
        )
    template = string.Template(TEMPLATE.read_text())
    return template.substitute(port=port, servers="\n".join(lines))


def haproxy_command(config: Path) -> list[str]:
    """HAProxy in the foreground (``-db``) on ``config``."""
    return ["haproxy", "-db", "-f", str(config)]
