"""Secret redaction: known values and secret-shaped strings, in whole text, in a
stream split anywhere, and in log records."""

from __future__ import annotations

import io
import json
import logging

import pytest

from agentkeel.errors import ConfigError
from agentkeel.secrets.known import KnownSecrets
from agentkeel.secrets.redact import SecretRedactor, StreamRedactor, redact_logs
from agentkeel.telemetry.logging import JsonFormatter

SAMPLES = {
    "openai_key": "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2",
    "anthropic_key": "sk-ant-api03-" + "x" * 40,
    "aws_access_key": "AKIAIOSFODNN7EXAMPLE",
    "github_token": "ghp_" + "a1B2" * 9,
    "slack_token": "xoxb-123456789012-abcdefghij",
    "google_api_key": "AIza" + "S" * 35,
    "agentkeel_key": "ak_live_0123456789abcdefXYZ",
    "jwt": "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbmEiLCJleHAiOjF9.c2lnbmF0dXJlLXZhbHVl",
    "bearer": "Bearer abcdefghijklmnopqrstuvwx",
    "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n"
    "-----END OPENSSH PRIVATE KEY-----",
}


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_every_secret_shape_is_replaced_with_its_kind(kind: str) -> None:
    """Each built-in shape becomes [REDACTED:<kind>], and the hook counts it once."""
    seen: list[tuple[str, str]] = []
    redactor = SecretRedactor(on_redaction=lambda k, where: seen.append((k, where)))
    text = f"before {SAMPLES[kind]} after"
    assert redactor.redact(text, where="reply") == f"before [REDACTED:{kind}] after"
    assert seen == [(kind, "reply")]


def test_ordinary_text_is_left_alone() -> None:
    """Words that merely resemble secrets (short sk-, 'bearer' alone) pass unchanged."""
    redactor = SecretRedactor()
    text = "ask-me about sk-short, a bearer of news, AKIA and eyJ alone"
    assert redactor.redact(text, where="reply") is text


def test_known_values_are_redacted_as_they_are_added() -> None:
    """A value added to KnownSecrets after the redactor was built is caught too."""
    known = KnownSecrets()
    redactor = SecretRedactor(known=known)
    assert redactor.redact("pw hunter2-hunter2", where="log") == "pw hunter2-hunter2"
    known.add("hunter2-hunter2")
    assert redactor.redact("pw hunter2-hunter2", where="log") == "pw [REDACTED:known_secret]"


def test_kinds_and_extra_patterns_are_configurable() -> None:
    """Only the chosen kinds apply; an extra pattern adds a kind; bad ones are ConfigErrors."""
    redactor = SecretRedactor(kinds=["jwt"], extra_patterns={"acme": r"acme_[0-9]{6}"})
    out = redactor.redact(f"{SAMPLES['openai_key']} acme_123456", where="reply")
    assert out == f"{SAMPLES['openai_key']} [REDACTED:acme]"
    with pytest.raises(ConfigError, match="not built-in"):
        SecretRedactor(kinds=["nope"])
    with pytest.raises(ConfigError, match=r"redact_patterns\.bad"):
        SecretRedactor(extra_patterns={"bad": "("})


@pytest.mark.parametrize("kind", ["openai_key", "bearer", "private_key", "jwt"])
def test_a_secret_split_across_stream_pieces_is_still_redacted(kind: str) -> None:
    """Fed one character at a time, the output equals the whole text's redaction."""
    redactor = SecretRedactor()
    text = f"here is {SAMPLES[kind]} and the rest"
    stream = StreamRedactor(redactor, where="reply")
    out = "".join(stream.feed(char) for char in text) + stream.flush()
    assert out == redactor.redact(text, where="reply", record=False)
    assert SAMPLES[kind] not in out


def test_the_stream_passes_finished_words_on_at_once() -> None:
    """Only the unfinished last word waits."""
    stream = StreamRedactor(SecretRedactor(), where="reply")
    assert stream.feed("hello wor") == "hello "
    assert stream.feed("ld ") == "world "
    assert stream.flush() == ""


def test_log_filter_redacts_message_fields_and_exceptions() -> None:
    """A known value in the message, an extra field or a traceback never reaches the line;
    the redaction is counted with where=log."""
    seen: list[tuple[str, str]] = []
    known = KnownSecrets(["s3cr3t-value-123"])
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter(service="t"))
    log = logging.getLogger("test.redact.filter")
    log.addHandler(handler)
    log.propagate = False
    try:
        redact_logs(
            SecretRedactor(known=known, on_redaction=lambda k, w: seen.append((k, w))),
            logger_name="test.redact.filter",
        )
        try:
            raise ValueError("boom s3cr3t-value-123")
        except ValueError:
            log.exception(
                "failed with %s", "s3cr3t-value-123", extra={"reason": "s3cr3t-value-123"}
            )
    finally:
        log.removeHandler(handler)
    line = json.loads(out.getvalue())
    assert "s3cr3t-value-123" not in out.getvalue()
    assert line["message"] == "failed with [REDACTED:known_secret]"
    assert line["reason"] == "[REDACTED:known_secret]"
    assert "[REDACTED:known_secret]" in line["exception"]
    assert ("known_secret", "log") in seen
