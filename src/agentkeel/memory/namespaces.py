"""How agentkeel names a user's memory namespace, in one place.

The memory tools write there for the verified caller and ``keel sessions forget``
empties it, so the two must never disagree on the name.
"""

from __future__ import annotations


def user_namespace(agent_id: str, user_id: str) -> str:
    """The memory namespace of one user of one agent: ``agent:<agent_id>/user:<user_id>``."""
    return f"agent:{agent_id}/user:{user_id}"
