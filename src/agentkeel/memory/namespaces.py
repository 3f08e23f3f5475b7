"""How agentkeel names a user's memory namespace, in one place.

The memory tools write there for the verified caller and ``keel sessions forget``
empties it, so the two must never disagree on the name.

A user without an organization (auth off, or a key with no organization) keeps
the original name; a user of an organization gets the organization in the name,
so user ``bob`` of ``acme`` and user ``bob`` of ``globex`` never share memories.
The organization and the user are percent-encoded there (``/`` and ``%``
included), so neither can reach into another part of the name:

>>> user_namespace("support", "bob")
'agent:support/user:bob'
>>> user_namespace("support", "bob", "acme")
'agent:support/org:acme/user:bob'
>>> user_namespace("support", "bob/x", "ac/me")
'agent:support/org:ac%2Fme/user:bob%2Fx'

Grants in the memory tokens file match these names with shell-style patterns,
where ``*`` also matches ``/``: ``agent:support/*`` and ``agent:*/user:*`` cover
both forms; ``agent:support/user:*`` covers only users without an organization;
``agent:support/org:acme/user:*`` covers one organization's users.
"""

from __future__ import annotations

from urllib.parse import quote

# What the memory server accepts in a namespace, less '/' (our separator); the
# rest of a value is percent-encoded.
_SAFE = "._:@+=-"


def user_namespace(agent_id: str, user_id: str, organization: str | None = None) -> str:
    """The memory namespace of one user of one agent: ``agent:<agent_id>/user:<user_id>``,
    or ``agent:<agent_id>/org:<organization>/user:<user_id>`` for a user of an organization."""
    if not organization:
        return f"agent:{agent_id}/user:{user_id}"
    return f"agent:{agent_id}/org:{_quote(organization)}/user:{_quote(user_id)}"


def _quote(value: str) -> str:
    return quote(value, safe=_SAFE)
