"""A user's memory namespace: unchanged without an organization, organization-qualified
with one, and what the memory tokens file's grant patterns make of both."""

from __future__ import annotations

import pytest

from agentkeel.memory.access import Principal
from agentkeel.memory.namespaces import user_namespace
from agentkeel.memory.planner import check_namespace


def test_a_user_without_an_organization_keeps_the_original_namespace() -> None:
    """Existing memories stay reachable: no organization, no change to the name."""
    assert user_namespace("support", "ana@example.com") == "agent:support/user:ana@example.com"
    assert user_namespace("support", "ana", None) == user_namespace("support", "ana", "")


def test_the_same_user_id_of_two_organizations_has_two_namespaces() -> None:
    """bob of acme and bob of globex never share a namespace, nor with bob alone."""
    names = {user_namespace("support", "bob", org) for org in ("acme", "globex", None)}
    assert names == {
        "agent:support/org:acme/user:bob",
        "agent:support/org:globex/user:bob",
        "agent:support/user:bob",
    }


@pytest.mark.parametrize(
    ("user", "org", "expected"),
    [
        ("bob/x", "acme", "agent:s/org:acme/user:bob%2Fx"),
        ("bob", "ac/me", "agent:s/org:ac%2Fme/user:bob"),
        ("b%2Fc", "acme", "agent:s/org:acme/user:b%252Fc"),
        ("..", "..", "agent:s/org:../user:.."),
        ("Zoë Smith", "acme", "agent:s/org:acme/user:Zo%C3%AB%20Smith"),
    ],
)
def test_organization_and_user_are_encoded_into_one_segment_each(
    user: str, org: str, expected: str
) -> None:
    """A '/' or '%' in either value cannot reach another part of the name, and the result
    is a namespace the memory server accepts."""
    namespace = user_namespace("s", user, org)
    assert namespace == expected
    assert check_namespace(namespace) == namespace


def test_grant_patterns_over_organization_namespaces() -> None:
    """'agent:support/*' and 'agent:*/user:*' cover both forms ('*' matches '/');
    'agent:support/user:*' only users without an organization; an organization's own
    pattern only its users."""
    plain = user_namespace("support", "bob")
    acme = user_namespace("support", "bob", "acme")
    globex = user_namespace("support", "bob", "globex")

    def grant(*patterns: str) -> Principal:
        return Principal(key="k", name="t", write=patterns)

    assert all(grant("agent:support/*").can_write(ns) for ns in (plain, acme, globex))
    assert all(grant("agent:*/user:*").can_write(ns) for ns in (plain, acme, globex))
    users_only = grant("agent:support/user:*")
    assert users_only.can_write(plain) and not users_only.can_write(acme)
    acme_only = grant("agent:support/org:acme/user:*")
    assert acme_only.can_write(acme) and not acme_only.can_write(globex)
    assert not acme_only.can_write(plain)
