"""The five categories every log line carries, and how a line gets its one.

A category is a retention class: ``keel logs prune`` keeps each for its own
number of days (``logging.retention_days``), and Loki gets one stream per
category. ``Category`` is declared once, in ``config/logs.py`` beside each
category's default retention (the settings check their keys against it), and
is used from here. The topic a line is about (``guardrail``, ``flags``, ``drain`` ...) is
its ``event`` field, not its category.

A line's category, first rule that applies:

1. the audit logger's lines, and lines that say ``category="audit"``: ``audit``;
2. lines at WARNING or above: ``error``;
3. an explicit ``category=`` among the five;
4. the category of the line's ``event`` (``EVENT_CATEGORIES``);
5. otherwise ``access``: requests at a service's edge and the service's own
   lifecycle (start, drain, reloads).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from agentkeel.config.logs import CATEGORIES, Category
from agentkeel.telemetry.audit import AUDIT_LOGGER

__all__ = ["CATEGORIES", "EVENT_CATEGORIES", "Category", "category_of"]

EVENT_CATEGORIES: Mapping[str, Category] = {
    "turn": Category.REASONING_TRACE,
    "model_call": Category.REASONING_TRACE,
    "guardrail": Category.REASONING_TRACE,
    "usage": Category.REASONING_TRACE,
    "memory": Category.REASONING_TRACE,
    "budget": Category.REASONING_TRACE,
    "redaction": Category.REASONING_TRACE,
    "tool_call": Category.TOOL_CALL,
    "tool_discovery": Category.TOOL_CALL,
}
"""Events whose lines belong to a category other than ``access``."""


def category_of(record: logging.LogRecord) -> Category:
    """The category of ``record`` by the rules above."""
    explicit = getattr(record, "category", None)
    if record.name == AUDIT_LOGGER or explicit == Category.AUDIT:
        return Category.AUDIT
    if (record.levelno or 0) >= logging.WARNING:
        return Category.ERROR
    if explicit in CATEGORIES:
        return Category(explicit)
    event = getattr(record, "event", None)
    if isinstance(event, str):
        return EVENT_CATEGORIES.get(event, Category.ACCESS)
    return Category.ACCESS
