"""The log pipeline that `keel render logging` writes: a Fluent Bit shipper (tail the
JSON files -> Kafka), a Fluent Bit stage from Kafka to Loki with bounded labels only,
and Loki's retention per category from logging.retention_days.

Fluent Bit and Loki are not installable here (no Debian package, no PyPI wheel), so the
files are checked structurally with PyYAML, the way Fluent Bit and Loki read them.
"""

from __future__ import annotations

import calendar
import ctypes
import ctypes.util
import json
import logging
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from agentkeel.assets.log_pipeline import (
    HIGH_CARDINALITY_FIELDS,
    KAFKA_TOPIC,
    LOKI_LIMITS_FILE,
    LOKI_STAGE_FILE,
    SHIPPER_FILE,
    render_logging,
)
from agentkeel.cli.main import app as keel
from agentkeel.config.logs import DEFAULT_RETENTION_DAYS, LoggingSettings
from agentkeel.config.settings import KeelSettings
from agentkeel.telemetry.log_categories import CATEGORIES
from agentkeel.telemetry.log_files import LogFileName, parse_log_file_name
from agentkeel.telemetry.logging import JsonFormatter


def documents(settings: KeelSettings) -> dict[str, dict[str, Any]]:
    return {name: yaml.safe_load(text) for name, text in render_logging(settings).items()}


def one(section: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [plugin for plugin in section if plugin["name"] == name]
    assert len(found) == 1, section
    return found[0]


def loki_labels(stage: dict[str, Any]) -> dict[str, str]:
    """The Loki output's labels, as Fluent Bit splits them: name=value or name=$field."""
    text = one(stage["pipeline"]["outputs"], "loki")["labels"]
    pairs = [item.strip().split("=", 1) for item in text.split(",")]
    return {name: value for name, value in pairs}


def test_three_files_in_yaml() -> None:
    """The shipper, the Loki stage and Loki's limits, each a YAML mapping."""
    docs = documents(KeelSettings())
    assert set(docs) == {SHIPPER_FILE, LOKI_STAGE_FILE, LOKI_LIMITS_FILE}
    assert all(isinstance(doc, dict) for doc in docs.values())


def test_the_shipper_tails_every_category_folder_with_the_json_parser(tmp_path: Path) -> None:
    """The tail input reads <logging.dir>/*/*.jsonl with a JSON parser that takes each
    line's own timestamp, skips rotated files, keeps its offsets, and tags every line by
    its category folder."""
    shipper = documents(KeelSettings(logging={"dir": tmp_path / "logs"}))[SHIPPER_FILE]
    tail = one(shipper["pipeline"]["inputs"], "tail")
    assert tail["path"] == str(tmp_path / "logs" / "*" / "*.jsonl")
    parser = one(shipper["parsers"], tail["parser"])
    assert (parser["format"], parser["time_key"]) == ("json", "timestamp")
    assert tail["db"] and tail["exclude_path"]
    assert tail["tag"] == "agentkeel.<category>.<service>"
    # Fluent Bit matches tag_regex against the full path (Onigmo named groups, as Python's
    # with a P): every category folder gives its category, a rotated name none.
    pattern = re.compile(tail["tag_regex"].replace("(?<", "(?P<"))
    for category in CATEGORIES:
        found = pattern.search(str(tmp_path / "logs" / category / "agent-8081.jsonl"))
        assert found is not None
        assert found.group("category", "service") == (category, "agent-8081")
    assert pattern.search(str(tmp_path / "logs" / "debug" / "router.jsonl")) is None


def fnmatch(pattern: str, path: str) -> bool:
    """The C library's fnmatch(pattern, path, 0): what Fluent Bit's tail input calls for
    each pattern of exclude_path."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    return int(libc.fnmatch(pattern.encode(), path.encode(), 0)) == 0


def excluded(exclude_path: str, path: Path) -> bool:
    """Whether Fluent Bit skips ``path``: exclude_path is a comma-separated list of
    patterns, and one match is enough."""
    return any(fnmatch(pattern, str(path)) for pattern in exclude_path.split(","))


# Service names a date can hide in: a replica named after its release day, a date
# alone, a dotted date, a counter-like tail that is not all digits.
DATE_LIKE_SERVICES = (
    "router",
    "agent-8081",
    "agent-2025-01-31-1",
    "2025-01-31",
    "backup.2025-01-31",
    "nightly.2025-01-31.1a",
    "batch.2025-01-31.1.v2",
)


def test_the_exclude_pattern_skips_rotated_files_only(tmp_path: Path) -> None:
    """Exactly the rotated files, <service>.<YYYY-MM-DD>.<n>.jsonl as log_files.py names
    them, are excluded: every active file is tailed, including those of services whose
    name looks like a date, and under a directory whose own path has a date in it."""
    logs = tmp_path / "2025-01-31" / "logs"
    tail = one(
        documents(KeelSettings(logging={"dir": logs}))[SHIPPER_FILE]["pipeline"]["inputs"], "tail"
    )
    day = date(2025, 2, 1)
    for service in DATE_LIKE_SERVICES:
        assert LoggingSettings(service_name=service).service_name == service  # a usable name
        for category in ("access", "audit"):
            active = logs / category / LogFileName(service).name
            assert parse_log_file_name(active.name) == LogFileName(service)
            assert not excluded(tail["exclude_path"], active), active
            for index in (1, 12, 999_999):
                rotated = logs / category / LogFileName(service, day, index).name
                parsed = parse_log_file_name(rotated.name)
                assert parsed is not None and not parsed.active  # the writer's own reading
                assert excluded(tail["exclude_path"], rotated), rotated


def test_the_time_format_reads_the_formatters_microseconds() -> None:
    """The parser's time_format reads the timestamp JsonFormatter writes, to the
    microsecond. Fluent Bit is not installable here: ``fluent_bit_time`` is a stand-in
    for its time lookup (flb_parser.c), which strptime()s the format up to %L, reads up
    to nine fractional digits there, then strptime()s the rest; the C library's
    strptime does the strptime parts."""
    created = calendar.timegm((2026, 12, 1, 12, 0, 0)) + 0.123456
    record = logging.makeLogRecord({"msg": "turn done", "created": created})
    line = json.loads(JsonFormatter(service="router").format(record))
    assert line["timestamp"] == "2026-12-01T12:00:00.123456Z"
    parser = one(documents(KeelSettings())[SHIPPER_FILE]["parsers"], "agentkeel_json")
    assert fluent_bit_time(parser["time_format"], line["timestamp"]) == pytest.approx(
        created, abs=1e-6
    )
    with pytest.raises(AssertionError):  # the stand-in can fail: no %L, no fraction read
        fluent_bit_time("%Y-%m-%dT%H:%M:%SZ", line["timestamp"])


class _Tm(ctypes.Structure):
    _fields_ = [
        *((name, ctypes.c_int) for name in ("sec", "min", "hour", "mday", "mon", "year")),
        *((name, ctypes.c_int) for name in ("wday", "yday", "isdst")),
        ("gmtoff", ctypes.c_long),
        ("zone", ctypes.c_char_p),
    ]


def fluent_bit_time(time_format: str, text: str) -> float:
    """Unix time of ``text`` read with ``time_format`` the way Fluent Bit reads it."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.strptime.restype = ctypes.c_void_p
    libc.strptime.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(_Tm)]
    head, has_fraction, rest = time_format.partition("%L")
    tm = _Tm()
    buffer = ctypes.create_string_buffer(text.encode())
    end = libc.strptime(buffer, head.encode(), ctypes.byref(tm))
    assert end is not None, f"{text!r} does not match {head!r}"
    consumed = end - ctypes.addressof(buffer)
    fraction = 0.0
    if has_fraction:
        digits = re.match(r"\d{1,9}", text[consumed:])
        assert digits, f"no fractional seconds at {text[consumed:]!r}"
        fraction = float(f"0.{digits.group()}")
        remaining = ctypes.create_string_buffer(text[consumed + len(digits.group()) :].encode())
        assert libc.strptime(remaining, rest.encode(), ctypes.byref(tm)) is not None
    seconds = (tm.year + 1900, tm.mon + 1, tm.mday, tm.hour, tm.min, tm.sec)
    return calendar.timegm(seconds) + fraction


def test_the_default_directory_is_the_data_dirs_logs(tmp_path: Path) -> None:
    """Without logging.dir, the files keel up writes: <data_dir>/logs."""
    shipper = documents(KeelSettings(data_dir=tmp_path / "data"))[SHIPPER_FILE]
    tail = one(shipper["pipeline"]["inputs"], "tail")
    assert tail["path"] == str(tmp_path / "data" / "logs" / "*" / "*.jsonl")


def test_the_shipper_writes_every_line_to_the_kafka_topic() -> None:
    """The Kafka output takes every tagged line, as JSON, to one topic keyed by service;
    brokers come from the environment where Fluent Bit runs."""
    shipper = documents(KeelSettings())[SHIPPER_FILE]
    kafka = one(shipper["pipeline"]["outputs"], "kafka")
    tag = one(shipper["pipeline"]["inputs"], "tail")["tag"]
    assert re.fullmatch(kafka["match"].replace(".", r"\.").replace("*", ".*"), tag)
    assert (kafka["topics"], kafka["format"]) == (KAFKA_TOPIC, "json")
    assert kafka["message_key_field"] == "service"
    assert kafka["brokers"] == "${KAFKA_BROKERS}"


def test_the_loki_stage_reads_kafka_and_parses_the_lines_back() -> None:
    """The second stage consumes the same topic, parses each message's payload with the
    JSON parser (restoring the line's timestamp) and sends every record to Loki."""
    stage = documents(KeelSettings())[LOKI_STAGE_FILE]
    kafka = one(stage["pipeline"]["inputs"], "kafka")
    assert kafka["topics"] == KAFKA_TOPIC and kafka["group_id"]
    parser = one(stage["pipeline"]["filters"], "parser")
    assert parser["key_name"] == "payload"
    assert one(stage["parsers"], parser["parser"])["time_key"] == "timestamp"
    loki = one(stage["pipeline"]["outputs"], "loki")
    assert kafka["tag"] == parser["match"] == loki["match"]
    assert loki["line_format"] == "json"
    assert (loki["host"], loki["port"]) == ("${LOKI_HOST}", "${LOKI_PORT}")


def test_loki_labels_are_bounded_and_never_a_correlation_id() -> None:
    """Labels: job, service, category, level, agent and version, taken from the record;
    correlation_id, session_id, user_id and trace_id are no label (they stay in the line,
    and the parser keeps every field)."""
    stage = documents(KeelSettings())[LOKI_STAGE_FILE]
    labels = loki_labels(stage)
    assert labels == {
        "job": "agentkeel",
        "service": "$service",
        "category": "$category",
        "level": "$level",
        "agent": "$agent_id",
        "version": "$version",
    }
    text = render_logging(KeelSettings())[LOKI_STAGE_FILE]
    loki = one(stage["pipeline"]["outputs"], "loki")
    for field in HIGH_CARDINALITY_FIELDS:
        assert field not in labels and f"${field}" not in loki["labels"]
        assert not any(field in str(value) for value in loki.values())
    assert {"correlation_id", "session_id", "trace_id"} <= set(HIGH_CARDINALITY_FIELDS)
    assert "label_keys" not in loki and "remove_keys" not in loki
    assert 'correlation_id="' in text  # the header shows how to query one instead


def test_loki_retention_per_category_equals_the_settings() -> None:
    """One retention_stream per category, selector {category="..."}, period in hours from
    logging.retention_days; the compactor applies retention."""
    limits = documents(KeelSettings())[LOKI_LIMITS_FILE]
    streams = limits["limits_config"]["retention_stream"]
    periods = {stream["selector"]: stream["period"] for stream in streams}
    assert periods == {
        f'{{category="{category}"}}': f"{days * 24}h"
        for category, days in DEFAULT_RETENTION_DAYS.items()
    }
    longest = max(DEFAULT_RETENTION_DAYS.values()) * 24
    assert limits["limits_config"]["retention_period"] == f"{longest}h"
    assert limits["compactor"]["retention_enabled"] is True


def test_a_changed_retention_setting_changes_the_limits() -> None:
    """Setting logging.retention_days changes the periods; a category left out keeps its
    default."""
    settings = KeelSettings(logging={"retention_days": {"reasoning_trace": 3, "audit": 400}})
    limits = documents(settings)[LOKI_LIMITS_FILE]["limits_config"]
    periods = {s["selector"]: s["period"] for s in limits["retention_stream"]}
    assert periods['{category="reasoning_trace"}'] == "72h"
    assert periods['{category="audit"}'] == "9600h"
    assert periods['{category="error"}'] == f"{DEFAULT_RETENTION_DAYS['error'] * 24}h"
    assert limits["retention_period"] == "9600h"
    default = render_logging(KeelSettings())[LOKI_LIMITS_FILE]
    assert render_logging(settings)[LOKI_LIMITS_FILE] != default


@pytest.mark.parametrize(
    ("retention", "says"),
    [
        ({"audits": 30}, "logging.retention_days names audits"),
        ({"error": 0}, "logging.retention_days.error is 0"),
    ],
)
def test_a_bad_retention_setting_is_a_clear_error(retention: dict[str, int], says: str) -> None:
    """An unknown category or a retention under one day is refused when the settings load,
    naming the key, so nothing is rendered from it."""
    with pytest.raises(ValidationError) as info:
        KeelSettings(logging={"retention_days": retention})
    assert says in str(info.value)


def test_keel_render_logging_writes_the_three_files(tmp_path: Path) -> None:
    """`keel render logging --dir D` writes the three files into D; a bad retention
    setting exits 2 with the message."""
    config = tmp_path / "keel.yaml"
    config.write_text("logging:\n  retention_days: {audit: 500}\n")
    out = tmp_path / "deploy"
    result = CliRunner().invoke(
        keel, ["--config", str(config), "render", "logging", "--dir", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in out.iterdir()) == sorted(
        [SHIPPER_FILE, LOKI_STAGE_FILE, LOKI_LIMITS_FILE]
    )
    limits = yaml.safe_load((out / LOKI_LIMITS_FILE).read_text())["limits_config"]
    assert {"selector": '{category="audit"}', "priority": 1, "period": "12000h"} in limits[
        "retention_stream"
    ]
    config.write_text("logging:\n  retention_days: {audit: -1}\n")
    refused = CliRunner().invoke(
        keel, ["--config", str(config), "render", "logging", "--dir", str(out)]
    )
    assert refused.exit_code == 2, refused.output
    assert "logging.retention_days.audit is -1" in refused.output
