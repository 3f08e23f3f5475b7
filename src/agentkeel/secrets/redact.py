"""Hiding credentials in text: URLs in logs and ``keel config show``, and every secret
in replies, tool results and log lines (output sanitization).

``SecretRedactor`` replaces (a) the secret values this process holds
(``KnownSecrets``) and (b) secret-shaped strings (provider API keys, cloud and
chat tokens, PEM private keys, bearer tokens, agentkeel API keys, JWTs) with
``[REDACTED:<kind>]``. ``StreamRedactor`` does it for text that arrives in
pieces (streamed tokens), holding back the unfinished word so a secret split
across two tokens is still caught. ``RedactingLogFilter`` applies it to every
log record a handler emits.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping

from agentkeel.errors import ConfigError
from agentkeel.secrets.known import KnownSecrets

__all__ = [
    "SECRET_PATTERNS",
    "RedactingLogFilter",
    "SecretRedactor",
    "StreamRedactor",
    "redact_logs",
    "redact_url",
]

_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@/\s]+@")

logger = logging.getLogger("agentkeel.secrets.redact")


def redact_url(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``.

    >>> redact_url("postgresql://keel:hunter2@db/keel")
    'postgresql://keel:***@db/keel'
    """
    return _URL_PASSWORD.sub(r"\1***@", text)


SECRET_PATTERNS: dict[str, str] = {
    # Order matters where two could match at one place: the more specific first.
    "private_key": r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z0-9]+ )*"
    r"PRIVATE KEY-----",
    "bearer": r"\b[Bb]earer\s+[A-Za-z0-9._~+/=\-]{16,}",
    "anthropic_key": r"\bsk-ant-[A-Za-z0-9_\-]{20,}",
    "openai_key": r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}",
    "aws_access_key": r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
    "github_token": r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})",
    "slack_token": r"\bxox[abposr]-[A-Za-z0-9\-]{10,}",
    "google_api_key": r"\bAIza[0-9A-Za-z_\-]{35}",
    "agentkeel_key": r"\bak_[A-Za-z0-9_\-]{16,}",
    "jwt": r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*",
}
"""Secret-shaped strings by kind (the ``kind`` of ``[REDACTED:<kind>]`` and of the metric)."""

KNOWN_KIND = "known_secret"
"""The kind of a value found in ``KnownSecrets``."""

RedactionHook = Callable[[str, str], None]
"""Called once per redacted string with ``(kind, where)``: counts it."""


class SecretRedactor:
    """Replaces secrets in text with ``[REDACTED:<kind>]``; counts and logs each redaction.

    ``kinds`` picks built-in patterns (default: all of ``SECRET_PATTERNS``);
    ``extra_patterns`` adds kinds of one's own (name -> regex). ``on_redaction``
    is called with ``(kind, where)`` per secret replaced (the metric).

    >>> known = KnownSecrets(["s3cret-platform-key"])
    >>> SecretRedactor(known=known).redact("key s3cret-platform-key, ghp_" + "a" * 36,
    ...                                    where="reply")
    'key [REDACTED:known_secret], [REDACTED:github_token]'
    """

    def __init__(
        self,
        *,
        known: KnownSecrets | None = None,
        kinds: Iterable[str] | None = None,
        extra_patterns: Mapping[str, str] | None = None,
        on_redaction: RedactionHook | None = None,
    ) -> None:
        chosen = list(SECRET_PATTERNS) if kinds is None else list(kinds)
        unknown = [kind for kind in chosen if kind not in SECRET_PATTERNS]
        if unknown:
            raise ConfigError(
                f"guardrails.redact_kinds names {', '.join(map(repr, unknown))}, which are not "
                f"built-in secret kinds; pick from {', '.join(SECRET_PATTERNS)} or add your own "
                "in guardrails.redact_patterns."
            )
        patterns = {kind: SECRET_PATTERNS[kind] for kind in chosen}
        for kind, pattern in (extra_patterns or {}).items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(
                    f"guardrails.redact_patterns.{kind} is not a valid regular expression "
                    f"({exc}); fix or remove it."
                ) from None
            patterns[kind] = pattern
        self._patterns = patterns
        self._known = known
        self._on_redaction = on_redaction
        self._lock = threading.Lock()
        self._compiled: tuple[int, re.Pattern[str] | None, dict[str, str]] = (-1, None, {})

    def _regex(self) -> tuple[re.Pattern[str] | None, dict[str, str]]:
        version = self._known.version if self._known is not None else 0
        cached_version, regex, kinds = self._compiled
        if cached_version == version:
            return regex, kinds
        with self._lock:
            values = sorted(self._known.values() if self._known else (), key=len, reverse=True)
            alternatives: list[tuple[str, str]] = []
            if values:
                # Known values first: a held key is reported as such, not as its shape.
                alternatives.append((KNOWN_KIND, "|".join(re.escape(value) for value in values)))
            alternatives.extend(self._patterns.items())
            # Each alternative in a named group: ``lastgroup`` (the outermost group to
            # close) names the kind, whatever groups a pattern has inside.
            kinds = {f"_k{index}": kind for index, (kind, _) in enumerate(alternatives)}
            regex = (
                re.compile(
                    "|".join(
                        f"(?P<_k{index}>{pattern})"
                        for index, (_, pattern) in enumerate(alternatives)
                    )
                )
                if alternatives
                else None
            )
            self._compiled = (version, regex, kinds)
        return regex, kinds

    def redact(self, text: str, *, where: str, record: bool = True) -> str:
        """``text`` with every secret replaced. ``where`` (``reply``, ``tool_result``,
        ``log``) labels the count and the log line; ``record=False`` does neither (text
        already counted elsewhere). Redactions in logs are counted, never logged."""
        if not text:
            return text
        regex, kinds = self._regex()
        if regex is None:
            return text
        found: list[str] = []

        def replace(match: re.Match[str]) -> str:
            kind = kinds[match.lastgroup or "_k0"]
            found.append(kind)
            return f"[REDACTED:{kind}]"

        cleaned = regex.sub(replace, text)
        if not found:
            return text
        if record:
            if self._on_redaction is not None:
                for kind in found:
                    self._on_redaction(kind, where)
            if where != "log":
                logger.warning(
                    "redacted %d secret(s) from a %s: %s",
                    len(found),
                    where,
                    ", ".join(sorted(set(found))),
                    extra={"event": "redaction", "reason": where},
                )
        return cleaned

    def contains_secret(self, text: str) -> bool:
        """Whether ``redact`` would change ``text``."""
        regex, _ = self._regex()
        return bool(text) and regex is not None and regex.search(text) is not None


_BEGIN_PEM = "-----BEGIN"
_END_PEM = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY-----")


class StreamRedactor:
    """Redacts text that arrives in pieces: ``feed`` returns what is safe to pass on now.

    The unfinished last word is held back (every secret shape is one word, or
    ``Bearer <token>``, or a PEM block, which is held from ``-----BEGIN`` to its
    end), so a secret split across two tokens is still replaced. At most
    ``max_hold`` characters wait; ``flush`` returns the rest at the end.

    >>> stream = StreamRedactor(SecretRedactor(), where="reply")
    >>> stream.feed("the key is sk-proj-abcdefgh") + stream.feed("ijklmnopqrstuv now")
    'the key is [REDACTED:openai_key] '
    >>> stream.flush()
    'now'
    """

    def __init__(
        self, redactor: SecretRedactor, *, where: str, record: bool = False, max_hold: int = 8192
    ) -> None:
        self._redactor = redactor
        self._where = where
        self._record = record
        self._max_hold = max_hold
        self._pending = ""

    def feed(self, text: str) -> str:
        self._pending += text
        cut = self._safe_cut(self._pending)
        if len(self._pending) - cut > self._max_hold:
            cut = len(self._pending)
        ready, self._pending = self._pending[:cut], self._pending[cut:]
        return self._redactor.redact(ready, where=self._where, record=self._record)

    def flush(self) -> str:
        ready, self._pending = self._pending, ""
        return self._redactor.redact(ready, where=self._where, record=self._record)

    @staticmethod
    def _safe_cut(text: str) -> int:
        begin = text.rfind(_BEGIN_PEM)
        block_end = 0
        if begin >= 0:
            end = _END_PEM.search(text, begin)
            if end is None:
                return _word_start(text, begin)
            block_end = end.end()
        # A partial "-----BEG" at the end is part of the unfinished word below.
        cut = _word_start(text, len(text))
        if cut < block_end:
            # Never inside a finished PEM block: pass it on whole.
            return block_end
        # "Bearer " and its token may come apart: hold the word "Bearer" with it.
        word_end = cut
        while word_end > 0 and text[word_end - 1].isspace():
            word_end -= 1
        word_start = _word_start(text, word_end)
        if text[word_start:word_end].lower() == "bearer":
            return word_start
        return cut


def _word_start(text: str, end: int) -> int:
    start = end
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    return start


class RedactingLogFilter(logging.Filter):
    """Replaces secrets in a record's message, string fields and exception text before
    a handler formats it. Counted (``where="log"``), never itself logged.

    >>> handler.addFilter(RedactingLogFilter(SecretRedactor(known=known)))
    """

    def __init__(self, redactor: SecretRedactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self.redactor.redact(message, where="log")
        if cleaned != message:
            record.msg, record.args = cleaned, None
        for key, value in list(record.__dict__.items()):
            if isinstance(value, str) and key not in _SKIP and value:
                clean = self.redactor.redact(value, where="log")
                if clean != value:
                    setattr(record, key, clean)
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self.redactor.redact(text, where="log")
        elif record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text, where="log")
        return True


_SKIP = frozenset({"msg", "exc_text", "name", "levelname", "pathname", "filename", "module"})


def redact_logs(redactor: SecretRedactor, *, logger_name: str = "") -> RedactingLogFilter:
    """Add one ``RedactingLogFilter`` to every handler of ``logger_name`` (the root by
    default), replacing a filter added before; returns it."""
    target = logging.getLogger(logger_name)
    log_filter = RedactingLogFilter(redactor)
    for handler in target.handlers:
        for old in list(handler.filters):
            if isinstance(old, RedactingLogFilter):
                handler.removeFilter(old)
        handler.addFilter(log_filter)
    return log_filter
