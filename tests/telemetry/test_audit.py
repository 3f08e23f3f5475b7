"""Audit lines: one JSON record per administrative action, never carrying a secret."""

from __future__ import annotations

import io
import json
import logging

from agentkeel.telemetry.audit import AUDIT_LOGGER, audit, credential_id
from agentkeel.telemetry.correlation import get_correlation_id, set_correlation_id
from agentkeel.telemetry.logging import JsonFormatter


def test_an_audit_line_carries_category_action_actor_details_and_correlation_id() -> None:
    """The JSON line has category audit, the action, the actor, the outcome, the details
    (a detail named like a LogRecord attribute is kept under audit_<name>) and the
    request's correlation id; the credential appears only as a fingerprint."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(service="test"))
    audit_logger = logging.getLogger(AUDIT_LOGGER)
    audit_logger.addHandler(handler)
    audit_logger.setLevel(logging.INFO)
    secret = "very-secret-admin-token"
    previous = get_correlation_id()
    set_correlation_id("corr-42")
    try:
        audit(
            "sessions.forget",
            actor=credential_id("server.admin_token", secret),
            user_id="ana",
            sessions=3,
            name="clashes",
        )
    finally:
        set_correlation_id(previous)
        audit_logger.removeHandler(handler)

    line = json.loads(stream.getvalue())
    assert line["category"] == "audit"
    assert line["action"] == "sessions.forget"
    assert line["outcome"] == "ok"
    assert line["actor"].startswith("server.admin_token:sha256:")
    assert (line["user_id"], line["sessions"], line["audit_name"]) == ("ana", 3, "clashes")
    assert line["correlation_id"] == "corr-42"
    assert secret not in stream.getvalue()


def test_credential_ids_tell_tokens_apart() -> None:
    """Two tokens under one name get different fingerprints; the same token the same."""
    assert credential_id("t", "a") == credential_id("t", "a")
    assert credential_id("t", "a") != credential_id("t", "b")
