"""``prometheus.yml`` for the local stack, for compose and for Kubernetes service discovery."""

from __future__ import annotations

from typing import Literal

from agentkeel.config.settings import KeelSettings

Target = Literal["local", "compose", "kubernetes"]
TARGETS: tuple[Target, ...] = ("local", "compose", "kubernetes")


def render_prometheus(settings: KeelSettings, target: Target) -> str:
    """The ``prometheus.yml`` text for ``target``: scrape jobs for the router, every agent
    replica, the memory server and the tool server; ``agent_alerts.yml`` as a rule file;
    Alertmanager as the alert target."""
    raise NotImplementedError
