"""Changing a flag from a command (``keel flags set``): one locked edit of the flag file.

The key must be a live setting (checked first). Under the accepted copy's lock: read
the flag file, switch the flag's default variant (``value`` defines or changes that
variant, and creates the flag when it is new; ``state`` enables or disables it),
validate the whole resulting document, stage the new file, audit the change with the
command's actor and put the document in the accepted copy, then replace the file.
Replicas then find the copy already holding their file's document and do not audit it
again; they apply it within ``flags.poll_interval_s``. Nothing is written when the
result does not validate or its audit record cannot be written.

>>> edit = set_flag(settings, "agent.model_chain", "premium", actor="cli:ana")
>>> edit.changes
[{'flag': 'agent.model_chain', 'change': 'default_variant', 'from': 'standard', 'to': 'premium'}]
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from agentkeel.config.flag_accepted import AcceptedFlags
from agentkeel.config.flag_file import (
    FlagDocument,
    FlagFileError,
    flag_key_problem,
    flag_source_path,
    is_yaml,
    parse_flag_bytes,
    validate_flag_document,
)
from agentkeel.config.settings import KeelSettings
from agentkeel.errors import KeelError
from agentkeel.storage.atomic import staged_write

__all__ = ["UNSET", "FlagEdit", "FlagEditError", "set_flag"]

UNSET: Any = object()
"""``set_flag(value=UNSET)``: keep the variant's value as it is."""


class FlagEditError(KeelError):
    """A flag change that cannot be made as asked (a variant the flag lacks, ...)."""

    code = "flag_edit_refused"
    status = 422


@dataclass(frozen=True, slots=True)
class FlagEdit:
    """What ``set_flag`` did."""

    key: str
    source: Path
    document: FlagDocument
    created: bool
    """Whether the flag is new in the file."""
    changes: list[dict[str, Any]]
    """The changes put in force (from the accepted copy's document); empty: none."""


def set_flag(
    settings: KeelSettings,
    key: str,
    variant: str,
    *,
    actor: str,
    value: Any = UNSET,
    state: Literal["ENABLED", "DISABLED"] | None = None,
) -> FlagEdit:
    """Make ``variant`` the default of flag ``key`` in the configured flag file and put
    the file in force (module docstring). Raises ``FlagEditError`` for a key that is not a
    live setting or a variant the flag lacks (without ``value``), ``FlagFileError`` when
    the result is not valid."""
    problem = flag_key_problem(key)
    if problem is not None:
        raise FlagEditError(f"'{key}' is {problem}.")
    source = flag_source_path(settings).absolute()
    accepted = AcceptedFlags(data_dir=settings.data_dir, source=source)
    with accepted.locked():
        data = _read(source)
        flags = data.setdefault("flags", {})
        if not isinstance(flags, dict):
            raise FlagFileError(str(source), ["'flags' must be an object of flag key -> flag"])
        flag = copy.deepcopy(flags.get(key))
        created = flag is None
        if flag is None:
            if value is UNSET:
                raise FlagEditError(
                    f"There is no flag '{key}' in {source}; give --value to create it with "
                    f"the variant '{variant}' (e.g. keel flags set {key} {variant} --value ...)."
                )
            flag = {"state": "ENABLED", "variants": {variant: value}, "defaultVariant": variant}
        else:
            if not isinstance(flag, dict):
                raise FlagFileError(str(source), [f"flag '{key}': must be an object"])
            variants = dict(flag.get("variants") or {})
            if value is not UNSET:
                variants[variant] = value
            elif variant not in variants:
                raise FlagEditError(
                    f"The flag '{key}' has no variant '{variant}' (it has "
                    f"{', '.join(variants) or 'none'}); give --value to define it."
                )
            flag["variants"] = variants
            flag["defaultVariant"] = variant
        if state is not None:
            flag["state"] = state
        flags[key] = flag
        document = validate_flag_document(data, origin=str(source), settings=settings)
        raw = _serialized(data, yaml_format=is_yaml(source))
        source.parent.mkdir(parents=True, exist_ok=True)
        # The file is replaced only once the change is audited and in the accepted copy.
        with staged_write(source, raw):
            changes = accepted.accept_locked(
                document, actor=actor, source_sha256=hashlib.sha256(raw).hexdigest()
            )
    return FlagEdit(
        key=key, source=source, document=document, created=created, changes=changes or []
    )


def _read(source: Path) -> dict[str, Any]:
    try:
        raw = source.read_bytes()
    except FileNotFoundError:
        return {"flags": {}}
    except OSError as exc:
        raise FlagFileError(str(source), [f"cannot be read: {exc.strerror or exc}"]) from None
    return parse_flag_bytes(raw, origin=str(source), yaml_format=is_yaml(source))


def _serialized(data: dict[str, Any], *, yaml_format: bool) -> bytes:
    # The file keeps its own key order; the accepted copy is the canonical form.
    if yaml_format:
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()
