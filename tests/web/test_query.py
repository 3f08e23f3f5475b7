"""The admin routes' query strings: unknown, repeated, empty, overlong or control-character
parameters are a 422 invalid_query naming the parameter."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from agentkeel.errors import InvalidRequest
from agentkeel.web.query import MAX_PARAM_CHARS, route_query

ALLOWED = ("user", "org")
EXAMPLE = "/admin/config?user=bob&org=acme"


def request(query: str) -> Request:
    return Request({"type": "http", "method": "GET", "query_string": query.encode(), "headers": []})


def refused(query: str, name: str = "user", *, required: bool = False) -> str:
    with pytest.raises(InvalidRequest) as caught:
        route_query(request(query), allowed=ALLOWED, example=EXAMPLE).text(name, required=required)
    assert caught.value.code == "invalid_query" and caught.value.status == 422
    return caught.value.message


def test_the_parameters_given_are_read_and_the_others_are_none() -> None:
    """A known parameter given once is its value; one not given is None."""
    query = route_query(request("user=bob%2Fx"), allowed=ALLOWED, example=EXAMPLE)
    assert (query.text("user"), query.text("org")) == ("bob/x", None)


def test_what_is_refused_names_the_parameter_and_what_to_do() -> None:
    """Unknown (with what the route takes), repeated, missing when required, empty, too
    long, control characters: each message says which and what to give."""
    assert "unknown query parameter(s) organization; this route takes user, org" in refused(
        "user=bob&organization=acme"
    )
    assert "user given more than once" in refused("user=a&user=b")
    assert f"is required (e.g. {EXAMPLE})" in refused("", required=True)
    assert "?user= is empty" in refused("user=")
    assert f"at most {MAX_PARAM_CHARS}" in refused("user=" + "x" * (MAX_PARAM_CHARS + 1))
    assert "control characters" in refused("user=bob%00")
