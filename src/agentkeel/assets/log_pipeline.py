"""The log pipeline as configuration: Fluent Bit (tail the JSON files -> Kafka buffer ->
Loki) and Loki's limits with a ``retention_stream`` per log category."""

from __future__ import annotations

from collections.abc import Mapping

from agentkeel.config.settings import KeelSettings


def render_logging(settings: KeelSettings) -> Mapping[str, str]:
    """File name -> text: ``fluent-bit.yaml`` and ``loki-limits.yaml``."""
    raise NotImplementedError
