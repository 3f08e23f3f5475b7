"""The log pipeline as configuration: Fluent Bit (tail the JSON files -> Kafka buffer ->
Loki) and Loki's limits with a ``retention_stream`` per log category.

Three files, in Fluent Bit's YAML format (3.2 or later: the ``parsers`` section) and
Loki's:

- ``fluent-bit-shipper.yaml`` runs next to the services: it tails
  ``<logging.dir>/*/*.jsonl`` (one folder per category; a rotated file,
  ``<service>.<YYYY-MM-DD>.<n>.jsonl``, is left alone) with a JSON parser that keeps
  each line's own timestamp, tags each line ``agentkeel.<category>.<service>`` from
  its path, and writes it to the Kafka topic ``agentkeel-logs``, keyed by service so
  one service's lines stay in order. Kafka is the buffer: Loki can be down or slow without the
  hosts holding more than Fluent Bit's own file buffer.
- ``fluent-bit-loki.yaml`` runs once per Loki: it consumes the topic and pushes each
  line to Loki with the bounded labels ``job``, ``service``, ``category``, ``level``
  and, where a line has them, ``agent`` and ``version``. ``correlation_id``,
  ``session_id``, ``user_id``, ``trace_id`` and ``span_id`` stay in the JSON line and
  are queried with a filter (``{service=~".+"} | json | correlation_id="..."``): as
  labels they would make a stream per request.
- ``loki-limits.yaml``: ``limits_config.retention_period`` and one
  ``retention_stream`` per category (``{category="audit"}`` ...) from
  ``logging.retention_days``, and the compactor with retention on.

Brokers and Loki's address are Fluent Bit environment placeholders
(``${KAFKA_BROKERS}``, ``${LOKI_HOST}``, ``${LOKI_PORT}``), set where it runs. The
text is built as data and written by PyYAML, so quoting is never done by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from agentkeel.config.settings import KeelSettings
from agentkeel.telemetry.log_categories import CATEGORIES
from agentkeel.telemetry.log_files import LOG_SUFFIX

__all__ = [
    "HIGH_CARDINALITY_FIELDS",
    "KAFKA_TOPIC",
    "LOKI_LABELS",
    "LOKI_LIMITS_FILE",
    "LOKI_STAGE_FILE",
    "SHIPPER_FILE",
    "render_logging",
    "retention_hours",
    "rotated_file_patterns",
]

SHIPPER_FILE = "fluent-bit-shipper.yaml"
LOKI_STAGE_FILE = "fluent-bit-loki.yaml"
LOKI_LIMITS_FILE = "loki-limits.yaml"

KAFKA_TOPIC = "agentkeel-logs"
KAFKA_GROUP = "agentkeel-loki"
KAFKA_BROKERS = "${KAFKA_BROKERS}"
LOKI_HOST = "${LOKI_HOST}"
LOKI_PORT = "${LOKI_PORT}"
STATE_DIR = "/var/lib/fluent-bit/agentkeel"
"""Where the shipper keeps its read offsets and its buffer, so a restart resumes."""

LOKI_LABELS: Mapping[str, str] = {
    "service": "service",
    "category": "category",
    "level": "level",
    "agent": "agent_id",
    "version": "version",
}
"""Loki label -> the JSON field it comes from: each has few values."""
HIGH_CARDINALITY_FIELDS = ("correlation_id", "session_id", "user_id", "trace_id", "span_id")
"""Fields that stay in the line, never a label (a stream per request, session or user)."""

PARSER = "agentkeel_json"
# The formatter writes UTC with microseconds: 2026-12-01T12:00:00.123456Z. Fluent Bit's
# %L reads the fractional seconds whatever their number of digits (up to nanoseconds).
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%LZ"
_DAY = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"
MAX_COUNTER_DIGITS = 6
"""Rotated files of a day the exclude patterns recognise: counters 1 to 999999."""
_HOURS_PER_DAY = 24


def rotated_file_patterns(folder: Path) -> list[str]:
    """Shell patterns (``fnmatch``, what Fluent Bit's ``exclude_path`` takes) of the
    rotated files in ``folder``: ``<service>.<YYYY-MM-DD>.<n>.jsonl`` (``log_files.py``).

    Only that tail is matched, so an active file whose service name has a date in it
    (``agent-2025-01-31.jsonl``) is still tailed. A glob has no "one or more digits",
    so there is one pattern per length of the counter.
    """
    return [
        str(folder / f"*.{_DAY}.{'[0-9]' * digits}{LOG_SUFFIX}")
        for digits in range(1, MAX_COUNTER_DIGITS + 1)
    ]


def retention_hours(settings: KeelSettings) -> dict[str, int]:
    """Hours to keep each category in Loki, from ``logging.retention_days`` (validated,
    and completed with the defaults, by ``LoggingSettings``).

    >>> retention_hours(KeelSettings())["audit"]
    8760
    """
    days = settings.logging.retention_days
    return {category: days[category] * _HOURS_PER_DAY for category in CATEGORIES}


def _parsers() -> list[dict[str, Any]]:
    return [
        {
            "name": PARSER,
            "format": "json",
            "time_key": "timestamp",
            "time_format": TIME_FORMAT,
            "time_keep": True,
        }
    ]


def _shipper(settings: KeelSettings) -> dict[str, Any]:
    logs = settings.logging.directory(settings.data_dir).absolute()
    categories = "|".join(CATEGORIES)
    return {
        "service": {
            "flush": 1,
            "log_level": "info",
            "storage.path": f"{STATE_DIR}/buffer",
            "storage.sync": "normal",
            "storage.backlog.mem_limit": "16M",
        },
        "parsers": _parsers(),
        "pipeline": {
            "inputs": [
                {
                    "name": "tail",
                    "path": str(logs / "*" / "*.jsonl"),
                    # Under the log directory only: a day in its own path excludes nothing.
                    "exclude_path": ",".join(rotated_file_patterns(logs / "*")),
                    "tag": "agentkeel.<category>.<service>",
                    "tag_regex": f"/(?<category>{categories})/(?<service>[^/]+)\\.jsonl$",
                    "parser": PARSER,
                    "db": f"{STATE_DIR}/tail.db",
                    "db.locking": True,
                    "read_from_head": True,
                    "refresh_interval": 5,
                    "rotate_wait": 30,
                    "buffer_max_size": "1M",
                    "skip_long_lines": True,
                    "mem_buf_limit": "16M",
                    "storage.type": "filesystem",
                }
            ],
            "outputs": [
                {
                    "name": "kafka",
                    "match": "agentkeel.*",
                    "brokers": KAFKA_BROKERS,
                    "topics": KAFKA_TOPIC,
                    "format": "json",
                    "message_key_field": "service",
                    "timestamp_key": "@timestamp",
                    "timestamp_format": "iso8601",
                    "rdkafka.request.required.acks": "all",
                    "rdkafka.enable.idempotence": "true",
                    "retry_limit": "no_limits",
                }
            ],
        },
    }


def _loki_stage() -> dict[str, Any]:
    labels = ", ".join(
        ["job=agentkeel", *(f"{label}=${field}" for label, field in LOKI_LABELS.items())]
    )
    return {
        "service": {"flush": 1, "log_level": "info"},
        "parsers": _parsers(),
        "pipeline": {
            "inputs": [
                {
                    "name": "kafka",
                    "tag": "agentkeel.kafka",
                    "brokers": KAFKA_BROKERS,
                    "topics": KAFKA_TOPIC,
                    "group_id": KAFKA_GROUP,
                    "poll_ms": 500,
                    "rdkafka.auto.offset.reset": "earliest",
                }
            ],
            "filters": [
                # The Kafka message is the shipper's JSON line: parse it back into the
                # record (and its timestamp), dropping Kafka's topic/partition/offset.
                {
                    "name": "parser",
                    "match": "agentkeel.kafka",
                    "key_name": "payload",
                    "parser": PARSER,
                    "reserve_data": False,
                },
                {"name": "modify", "match": "agentkeel.kafka", "remove": "@timestamp"},
            ],
            "outputs": [
                {
                    "name": "loki",
                    "match": "agentkeel.kafka",
                    "host": LOKI_HOST,
                    "port": LOKI_PORT,
                    "labels": labels,
                    "line_format": "json",
                    "retry_limit": "no_limits",
                }
            ],
        },
    }


def _loki_limits(settings: KeelSettings) -> dict[str, Any]:
    hours = retention_hours(settings)
    return {
        "limits_config": {
            # A stream without a category (none is written) is kept as long as the longest.
            "retention_period": f"{max(hours.values())}h",
            "retention_stream": [
                {"selector": f'{{category="{category}"}}', "priority": 1, "period": f"{period}h"}
                for category, period in hours.items()
            ],
        },
        "compactor": {
            "working_directory": "/loki/compactor",
            "compaction_interval": "10m",
            "retention_enabled": True,
            "retention_delete_delay": "2h",
            "delete_request_store": "filesystem",
        },
    }


_HEADERS = {
    SHIPPER_FILE: (
        "Fluent Bit (3.2+) next to the agentkeel services: tails the JSON log files and "
        "writes them to Kafka.\n"
        "Set KAFKA_BROKERS (host:port,...) where it runs."
    ),
    LOKI_STAGE_FILE: (
        "Fluent Bit (3.2+) between Kafka and Loki: consumes the agentkeel-logs topic and "
        "pushes to Loki.\n"
        "Set KAFKA_BROKERS, LOKI_HOST and LOKI_PORT where it runs. correlation_id, "
        "session_id and trace_id\n"
        'stay in the line: {service=~".+"} | json | correlation_id="..."'
    ),
    LOKI_LIMITS_FILE: (
        "Merge into Loki's configuration: retention per log category from "
        "logging.retention_days.\n"
        "delete_request_store names the object store Loki's chunks live in (filesystem, "
        "s3, gcs, ...)."
    ),
}


def _text(name: str, document: Mapping[str, Any]) -> str:
    header = "".join(f"# {line}\n" for line in _HEADERS[name].splitlines())
    return header + yaml.safe_dump(dict(document), sort_keys=False, width=100)


def render_logging(settings: KeelSettings) -> Mapping[str, str]:
    """File name -> text: ``fluent-bit-shipper.yaml``, ``fluent-bit-loki.yaml`` and
    ``loki-limits.yaml``."""
    return {
        SHIPPER_FILE: _text(SHIPPER_FILE, _shipper(settings)),
        LOKI_STAGE_FILE: _text(LOKI_STAGE_FILE, _loki_stage()),
        LOKI_LIMITS_FILE: _text(LOKI_LIMITS_FILE, _loki_limits(settings)),
    }
