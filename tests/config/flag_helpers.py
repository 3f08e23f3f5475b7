"""Settings and flag documents the feature-flag tests share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentkeel.config.settings import KeelSettings


def flag_settings(data_dir: Path, **extra: Any) -> KeelSettings:
    """Two scripted providers ``a`` and ``b``, the chain ``b-first``, flags polled fast."""
    values: dict[str, Any] = {
        "data_dir": str(data_dir),
        "secrets_dir": None,
        "models": [{"name": "a", "kind": "scripted"}, {"name": "b", "kind": "scripted"}],
        "model_chains": {"b-first": ["b", "a"]},
        "flags": {"poll_interval_s": 0.05},
        **extra,
    }
    return KeelSettings.model_validate(values)


def chain_flag(
    default: str = "standard", *, targeting: dict[str, Any] | None = None, state: str = "ENABLED"
) -> dict[str, Any]:
    """``agent.model_chain`` with the variants standard (``a``) and premium (``b-first``)."""
    flag: dict[str, Any] = {
        "state": state,
        "variants": {"standard": "a", "premium": "b-first"},
        "defaultVariant": default,
    }
    if targeting is not None:
        flag["targeting"] = targeting
    return flag


ACME_PREMIUM = {"if": [{"==": [{"var": "organization"}, "acme"]}, "premium"]}
"""Targeting: the acme organization gets premium, everyone else the default."""


def write_flags(path: Path, flags: dict[str, Any], **top: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"flags": flags, **top}, indent=2))
