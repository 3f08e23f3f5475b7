"""Query strings of the admin routes, checked the same way everywhere.

A parameter the route does not take (a misspelt ``?organization=``), one given twice,
an empty one, one longer than ``MAX_PARAM_CHARS`` or holding control characters is a
422 ``invalid_query`` that names it and says what the route takes, rather than a
parameter quietly ignored.

>>> query = route_query(request, allowed=("user", "org", "task"),
...                     example="/admin/config?user=bob&org=acme")
>>> query.text("user", required=True), query.text("org")
('bob', None)
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request

from agentkeel.errors import InvalidRequest

__all__ = ["MAX_PARAM_CHARS", "RouteQuery", "route_query"]

MAX_PARAM_CHARS = 256


class RouteQuery:
    """A request's query parameters, known to be among the route's and each given once."""

    def __init__(self, values: dict[str, str], *, allowed: Sequence[str], example: str) -> None:
        self._values = values
        self.allowed = tuple(allowed)
        self.example = example

    def text(
        self, name: str, *, required: bool = False, max_chars: int = MAX_PARAM_CHARS
    ) -> str | None:
        """The value of ``?name=``, or ``None`` when absent; a 422 when ``required`` and
        absent, or when empty, longer than ``max_chars`` or holding control characters."""
        value = self._values.get(name)
        if value is None:
            if required:
                raise _invalid(f"?{name}= is required (e.g. {self.example}).")
            return None
        if not value:
            raise _invalid(f"?{name}= is empty; give a value or leave the parameter out.")
        if len(value) > max_chars:
            raise _invalid(
                f"?{name}= is {len(value)} characters long; at most {max_chars} are allowed."
            )
        if any(ord(char) < 32 or ord(char) == 127 for char in value):
            raise _invalid(f"?{name}= holds control characters; give plain text.")
        return value


def route_query(request: Request, *, allowed: Sequence[str], example: str) -> RouteQuery:
    """The query of ``request`` for a route that takes the parameters ``allowed``
    (``example`` is a whole URL with them, for messages); a 422 ``invalid_query`` for an
    unknown parameter or one given more than once."""
    params = request.query_params
    unknown = sorted(set(params.keys()) - set(allowed))
    if unknown:
        raise _invalid(
            f"unknown query parameter(s) {', '.join(unknown)}; this route takes "
            f"{', '.join(allowed)} (e.g. {example})."
        )
    repeated = sorted(key for key in set(params.keys()) if len(params.getlist(key)) > 1)
    if repeated:
        raise _invalid(
            f"query parameter(s) {', '.join(repeated)} given more than once; give each once."
        )
    return RouteQuery(dict(params.items()), allowed=allowed, example=example)


def _invalid(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_query")
