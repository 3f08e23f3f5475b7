"""What changed between two flag documents: the ``changes`` of a ``flags.changed`` audit
record, from what to what.

>>> flag_changes(old, new)
[{'flag': 'agent.model_chain', 'change': 'default_variant', 'from': 'standard', 'to': 'premium'}]
>>> describe_changes(flag_changes(old, new))
'agent.model_chain: default variant standard -> premium'
"""

from __future__ import annotations

from typing import Any

from agentkeel.config.flag_file import FlagDefinition, FlagDocument

__all__ = ["describe_changes", "flag_changes"]


def flag_changes(old: FlagDocument, new: FlagDocument) -> list[dict[str, Any]]:
    """Every difference, flag by flag (sorted): a flag ``added`` or ``removed`` (with its
    whole definition), its ``state``, ``default_variant``, a ``variant`` added, removed
    or given another value (``from``/``to`` ``None`` for absent), its ``targeting``."""
    changes: list[dict[str, Any]] = []
    for key in sorted(set(old.flags) | set(new.flags)):
        before, after = old.flags.get(key), new.flags.get(key)
        if before is None and after is not None:
            changes.append({"flag": key, "change": "added", "from": None, "to": _whole(after)})
        elif after is None and before is not None:
            changes.append({"flag": key, "change": "removed", "from": _whole(before), "to": None})
        elif before is not None and after is not None:
            changes.extend(_flag_changes(before, after))
    return changes


def describe_changes(changes: list[dict[str, Any]]) -> str:
    """One line per change, for logs and the CLI (``flag: what from -> to``)."""
    lines = []
    for change in changes:
        flag, kind = change["flag"], change["change"]
        if kind in ("added", "removed"):
            lines.append(f"{flag}: flag {kind}")
        elif kind == "variant":
            lines.append(
                f"{flag}: variant {change['variant']} "
                f"{_shown(change['from'])} -> {_shown(change['to'])}"
            )
        elif kind == "targeting":
            lines.append(f"{flag}: targeting changed")
        else:
            label = kind.replace("_", " ")
            lines.append(f"{flag}: {label} {change['from']} -> {change['to']}")
    return "; ".join(lines) if lines else "no change"


def _flag_changes(before: FlagDefinition, after: FlagDefinition) -> list[dict[str, Any]]:
    key = before.key
    changes: list[dict[str, Any]] = []
    if before.state != after.state:
        changes.append({"flag": key, "change": "state", "from": before.state, "to": after.state})
    if before.default_variant != after.default_variant:
        changes.append(
            {
                "flag": key,
                "change": "default_variant",
                "from": before.default_variant,
                "to": after.default_variant,
            }
        )
    for name in sorted(set(before.variants) | set(after.variants)):
        old_value, new_value = before.variants.get(name), after.variants.get(name)
        if name not in before.variants or name not in after.variants or old_value != new_value:
            changes.append(
                {
                    "flag": key,
                    "change": "variant",
                    "variant": name,
                    "from": old_value,
                    "to": new_value,
                }
            )
    if before.targeting != after.targeting:
        changes.append(
            {
                "flag": key,
                "change": "targeting",
                "from": _plain(before.targeting),
                "to": _plain(after.targeting),
            }
        )
    return changes


def _whole(flag: FlagDefinition) -> dict[str, Any]:
    return {
        "state": flag.state,
        "default_variant": flag.default_variant,
        "variants": dict(flag.variants),
        "targeting": _plain(flag.targeting),
    }


def _plain(value: Any) -> Any:
    return dict(value) if value is not None else None


def _shown(value: Any) -> str:
    return "(none)" if value is None else repr(value)
