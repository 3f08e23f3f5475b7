"""Whether a TCP port on this machine is free for a child to listen on."""

from __future__ import annotations

import socket

__all__ = ["bind_error", "url_host"]


def bind_error(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be listened on now (something else holds it), or None.

    Checked before a child starts: a ready check would otherwise be answered by
    the other process (often an earlier ``keel up``) instead of the new child.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc
    return None


def url_host(host: str) -> str:
    """The address to connect to for a service listening on ``host``.

    Listening on every interface still means connecting over loopback.
    """
    return "127.0.0.1" if host in ("0.0.0.0", "") else host
