"""Replica drivers: how a rollout starts and stops replicas (``ReplicaDriver``).

``LocalDriver`` asks a ``keel up`` on this machine through its control socket;
a Kubernetes driver comes later.
"""

from agentkeel.deploy.drivers.local import LocalDriver

__all__ = ["LocalDriver"]
