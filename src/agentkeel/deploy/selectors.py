"""The metric selectors of the judge's config: PromQL instant-vector selectors.

``agent_tool_calls_total{status!="success"}`` names a sample and label
matchers (``=``, ``!=``, ``=~``, ``!~``; regexes anchored as in PromQL). The
replica scrape source matches samples with them; the Prometheus source turns
them into queries with the version added.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agentkeel.errors import ConfigError

__all__ = ["Matcher", "Selector", "parse_selector", "promql_string"]

_NAME = re.compile(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


@dataclass(frozen=True, slots=True)
class Matcher:
    label: str
    op: str
    value: str
    pattern: re.Pattern[str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self.pattern is not None
        found = self.pattern.fullmatch(actual) is not None
        return found if self.op == "=~" else not found


@dataclass(frozen=True, slots=True)
class Selector:
    """A sample name and label matchers."""

    name: str
    matchers: tuple[Matcher, ...] = ()
    text: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def with_suffix(self, suffix: str) -> Selector:
        return Selector(self.name + suffix, self.matchers, self.text)

    def promql(self, extra: Mapping[str, str] | None = None) -> str:
        """The selector as PromQL, with ``extra`` equality matchers (the version) added."""
        parts = [f"{m.label}{m.op}{promql_string(m.value)}" for m in self.matchers]
        parts += [f"{label}={promql_string(value)}" for label, value in (extra or {}).items()]
        return f"{self.name}{{{','.join(parts)}}}" if parts else self.name


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_selector(text: str) -> Selector:
    """Parse ``name{label="value",...}``; ``ConfigError`` names what is wrong."""
    found = _NAME.match(text)
    if found is None:
        raise ConfigError(
            f"Judge metric selector {text!r} does not start with a metric name; write it "
            'like agent_tool_calls_total{status!="success"}.'
        )
    name = found.group(1)
    rest = text[found.end() :].strip()
    if not rest:
        return Selector(name, (), text)
    if not (rest.startswith("{") and rest.endswith("}")):
        raise ConfigError(
            f"Judge metric selector {text!r}: after the name {name!r} only label matchers "
            'in braces may follow, e.g. {status!="success"}.'
        )
    body = rest[1:-1].strip()
    matchers: list[Matcher] = []
    position = 0
    while position < len(body):
        m = _MATCHER.match(body, position)
        if m is None:
            raise ConfigError(
                f"Judge metric selector {text!r}: cannot read the matcher at "
                f'{body[position:]!r}; write label="value" (or !=, =~, !~), comma-separated.'
            )
        label, op, raw, _ = m.groups()
        value = re.sub(r"\\(.)", r"\1", raw)
        pattern = None
        if op in ("=~", "!~"):
            try:
                pattern = re.compile(value)
            except re.error as exc:
                raise ConfigError(
                    f"Judge metric selector {text!r}: {value!r} is not a valid regex ({exc})."
                ) from exc
        matchers.append(Matcher(label, op, value, pattern))
        position = m.end()
    return Selector(name, tuple(matchers), text)


def parse_selectors(texts: Sequence[str]) -> tuple[Selector, ...]:
    return tuple(parse_selector(t) for t in texts)
