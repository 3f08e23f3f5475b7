"""Free loopback ports for tests and rehearsals that start real ``keel up`` stacks.

>>> base = free_port_run(5)   # base, base+1, ... base+4 are free now
"""

from __future__ import annotations

import socket

__all__ = ["free_port_run", "port_free"]


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports, away from the defaults."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base + count < 65000 and all(port_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no run of free loopback ports found")


def port_free(port: int) -> bool:
    """Nothing listens on (or holds) ``port`` on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
