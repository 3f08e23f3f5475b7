"""Checks on a user's message before it reaches the agent.

Empty input and input over ``max_input_chars`` are refused; control characters
(other than newline and tab) are stripped; well-known prompt-injection phrases
are flagged. A flag is reported with the reply and counted as a guardrail
event; it blocks the turn only when ``guardrails.block_prompt_injection`` is
set, because phrase lists are blunt and legitimate messages sometimes quote
them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agentkeel.errors import InputEmpty, InputTooLarge, InvalidRequest

PROMPT_INJECTION = "prompt_injection"

INJECTION_MARKERS: tuple[str, ...] = (
    "ignore previous instructions",
    "ignore all previous",
    "ignore the previous instructions",
    "ignore your instructions",
    "disregard the above",
    "disregard previous instructions",
    "disregard all previous",
    "forget your instructions",
    "forget all previous",
    "you are now",
    "new instructions:",
    "reveal your system prompt",
    "print your system prompt",
    "show me your system prompt",
    "<|im_start|>",
    "<|im_end|>",
    "<|system|>",
    "<|endoftext|>",
    "[inst]",
    "### system",
    "### instruction",
)
"""Lower-case phrases matched against the message with whitespace collapsed and
invisible format characters removed (so "ig\u200bnore previous" still matches)."""

# C0 and C1 control characters except tab and newline; carriage returns go too,
# so a CRLF message stores as LF.
_CONTROL = {c: None for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0D, 0x20), 0x7F)}
_CONTROL.update({c: None for c in range(0x80, 0xA0)})
_SPACES = re.compile(r"\s+")
# Zero-width and bidi format characters: invisible, and a cheap way to split a
# phrase so a plain substring match misses it.
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


@dataclass(frozen=True, slots=True)
class ValidatedInput:
    """The cleaned message and the guardrail flags raised on it."""

    content: str
    flags: tuple[str, ...] = ()
    markers: tuple[str, ...] = ()
    """The injection phrases found, for the log line (never sent to the client)."""


def validate_input(
    content: str, *, max_input_chars: int, block_prompt_injection: bool = False
) -> ValidatedInput:
    """Clean and check one user message.

    Raises ``InputTooLarge`` (413) over ``max_input_chars``, ``InputEmpty`` (422)
    when nothing but whitespace is left, and ``InvalidRequest`` with code
    ``prompt_injection_blocked`` (422) when an injection marker is found and
    blocking is on.
    """
    if len(content) > max_input_chars:
        raise InputTooLarge(
            f"The message is {len(content)} characters; this agent accepts at most "
            f"{max_input_chars}. Shorten it or split it over several turns."
        )
    cleaned = content.translate(_CONTROL)
    if not cleaned.strip():
        raise InputEmpty(
            "The message is empty (only whitespace or control characters). Send some text."
        )
    markers = find_injection_markers(cleaned)
    if not markers:
        return ValidatedInput(content=cleaned)
    if block_prompt_injection:
        raise InvalidRequest(
            "The message was blocked because it looks like a prompt-injection attempt "
            f"(it contains {markers[0]!r}). Rephrase it; operators can turn this off with "
            "guardrails.block_prompt_injection=false.",
            code="prompt_injection_blocked",
        )
    return ValidatedInput(content=cleaned, flags=(PROMPT_INJECTION,), markers=markers)


def find_injection_markers(text: str) -> tuple[str, ...]:
    """The known injection phrases that occur in ``text`` (case and spacing ignored)."""
    normalized = _SPACES.sub(" ", _INVISIBLE.sub("", text.lower()))
    return tuple(marker for marker in INJECTION_MARKERS if marker in normalized)
