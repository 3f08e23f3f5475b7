"""Flag documents: a flagd-format flag file, parsed and checked against keel's rules.

The file is flagd's own format (JSON, or YAML for a ``.yaml`` / ``.yml`` name), so a
remote flagd can serve the same document. Each flag key is a live setting's dotted key
(``KeelSettings.LIVE``: flagd accepts any non-empty string as a key, dots included),
and each variant is a value for that setting::

    {"flags": {"agent.model_chain": {
        "state": "ENABLED",
        "variants": {"standard": "standard", "premium": "premium"},
        "defaultVariant": "standard",
        "targeting": {"if": [{"==": [{"var": "organization"}, "acme"]}, "premium"]}}}}

``validate_flag_document`` checks flagd's syntax (through flagd's own parser,
``FlagdCore.set_flags``), then keel's rules: every key is live, every variant's value
is valid for its setting (``check_live``, with the settings' chains and providers),
``defaultVariant`` is one of the variants, and, as far as a static look can tell, the
targeting only returns declared variants, uses operators flagd knows and reads
attributes keel sets. Every problem is reported at once, each naming the flag.

>>> document = load_flag_file(Path("flags.json"), settings=settings)
>>> sorted(document.flags)
['agent.model_chain']
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.contrib.tools.flagd.core.targeting.targeting import OPERATORS
from openfeature.exception import OpenFeatureError

from agentkeel.config.live import check_live, live_keys, setting_field
from agentkeel.config.settings import KeelSettings
from agentkeel.errors import ConfigError

__all__ = [
    "FlagDefinition",
    "FlagDocument",
    "FlagFileError",
    "SettingKind",
    "canonical_flag_bytes",
    "flag_key_problem",
    "flag_source_path",
    "load_flag_file",
    "parse_flag_bytes",
    "parse_flag_document",
    "setting_kind",
    "validate_flag_document",
]

SettingKind = Literal["boolean", "integer", "float", "string", "object"]
"""The OpenFeature flag type a live setting is evaluated as."""

STATES = ("ENABLED", "DISABLED")
TOP_LEVEL_KEYS = frozenset({"flags", "$evaluators", "metadata", "$schema"})
CONTEXT_ATTRIBUTES = frozenset(
    {"targetingKey", "user", "organization", "agent", "version", "task", "session"}
)
"""What keel puts in every evaluation context (``TurnContext.attributes()``), plus
``targetingKey`` (``<organization>/<user>``, or the user) and flagd's ``$flagd.*``."""

# json-logic's own control operators, evaluated by its interpreter before the table.
_CONTROL_OPERATORS = frozenset(
    {"if", "?:", "and", "or", "filter", "reduce", "map", "all", "some", "none"}
)


class FlagFileError(ConfigError):
    """A flag file that cannot be put in force; ``problems`` lists every reason."""

    def __init__(self, origin: str, problems: list[str]) -> None:
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(
            f"{origin}: the flag file is refused ({count}):\n  - " + "\n  - ".join(problems)
        )
        self.origin = origin
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class FlagDefinition:
    """One flag of a document, as flagd will serve it."""

    key: str
    state: str
    """``ENABLED`` or ``DISABLED`` (a disabled flag leaves the setting to the layers below)."""
    variants: Mapping[str, Any]
    """Variant name -> its value, as written in the file."""
    default_variant: str | None
    """Served when no targeting rule picks a variant; ``None``: the layers below."""
    targeting: Mapping[str, Any] | None
    """The json-logic rule, ``$ref`` to ``$evaluators`` resolved; ``None`` when there is none."""

    @property
    def enabled(self) -> bool:
        return self.state == "ENABLED"

    def summary(self) -> dict[str, Any]:
        """What ``/admin/flags`` and ``keel flags list --json`` show of the flag."""
        return {
            "state": self.state,
            "default_variant": self.default_variant,
            "variants": dict(self.variants),
            "targeting": self.targeting is not None,
        }


@dataclass(frozen=True, slots=True)
class FlagDocument:
    """A parsed flag document: its flags and the canonical bytes the provider reads."""

    data: Mapping[str, Any]
    """The document as written (flagd format, ``$evaluators`` kept)."""
    flags: Mapping[str, FlagDefinition]
    content: bytes
    """``data`` as canonical JSON: what the accepted copy holds."""
    sha256: str
    """Hex SHA-256 of ``content``: the same document has the same hash on every replica."""

    @classmethod
    def empty(cls) -> FlagDocument:
        """The document of no flags (what is in force without a flag file)."""
        return parse_flag_document({"flags": {}}, origin="(no flags)")


def flag_source_path(settings: KeelSettings) -> Path:
    """The flag file ``flags.source: file`` reads: ``flags.file``, else
    ``<data_dir>/flags.json``."""
    return settings.flags.file or settings.data_dir / "flags.json"


def canonical_flag_bytes(data: Mapping[str, Any]) -> bytes:
    """``data`` as the canonical JSON every replica and the CLI write (sorted keys)."""
    text = json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False)
    return (text + "\n").encode()


def parse_flag_bytes(raw: bytes, *, origin: str, yaml_format: bool = False) -> dict[str, Any]:
    """The mapping in a flag file's bytes (JSON, or YAML with ``yaml_format``), or a
    ``FlagFileError`` saying where the syntax breaks."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise FlagFileError(origin, [f"not UTF-8 text (byte {exc.start})"]) from None
    data: Any
    try:
        data = yaml.safe_load(text) if yaml_format else json.loads(text)
    except json.JSONDecodeError as exc:
        raise FlagFileError(
            origin, [f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"]
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise FlagFileError(origin, [f"not valid YAML{where}: {exc}"]) from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise FlagFileError(origin, [f"the document is {kind}; it must be an object with 'flags'"])
    return data


def load_flag_file(path: Path, *, settings: KeelSettings) -> FlagDocument:
    """Read and validate the flag file at ``path`` (see ``validate_flag_document``).
    A missing file is a ``FlagFileError`` too; callers that treat it as "no flags"
    check for it first."""
    origin = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FlagFileError(origin, ["the file does not exist"]) from None
    except OSError as exc:
        raise FlagFileError(origin, [f"cannot be read: {exc.strerror or exc}"]) from None
    data = parse_flag_bytes(raw, origin=origin, yaml_format=is_yaml(path))
    return validate_flag_document(data, origin=origin, settings=settings)


def is_yaml(path: Path) -> bool:
    """Whether a flag file is YAML (by its name), else JSON."""
    return path.suffix.lower() in {".yaml", ".yml"}


def parse_flag_document(data: Mapping[str, Any], *, origin: str) -> FlagDocument:
    """``data`` as a ``FlagDocument`` when flagd can parse it (no keel rules: what the
    accepted copy is read with); ``FlagFileError`` otherwise."""
    problems: list[str] = []
    definitions = _parse(data, problems=problems)
    if problems or definitions is None:
        raise FlagFileError(origin, problems)
    return _document(data, definitions)


def validate_flag_document(
    data: Mapping[str, Any], *, origin: str, settings: KeelSettings
) -> FlagDocument:
    """``data`` as a ``FlagDocument`` when it passes flagd's syntax and keel's rules
    (module docstring); otherwise a ``FlagFileError`` listing every problem."""
    problems: list[str] = []
    definitions = _parse(data, problems=problems)
    for flag in (definitions or {}).values():
        problems.extend(_keel_problems(flag, settings=settings))
    if problems or definitions is None:
        raise FlagFileError(origin, problems)
    return _document(data, definitions)


def flag_key_problem(key: str) -> str | None:
    """Why ``key`` cannot be a flag (it is not a live setting), or ``None`` when it can.

    >>> flag_key_problem("server.port")
    'not a setting flags may change; the live settings are: agent.model_chain, ...'
    """
    if key in live_keys():
        return None
    return f"not a setting flags may change; the live settings are: {', '.join(live_keys())}"


def setting_kind(key: str) -> SettingKind:
    """How the live setting ``key`` is evaluated: lists and tables are object flags.

    >>> setting_kind("guardrails.max_steps_per_turn"), setting_kind("agent.tools")
    ('integer', 'object')
    """
    annotation: Any = setting_field(key).annotation
    if get_origin(annotation) in (Union, UnionType):
        members = [arg for arg in get_args(annotation) if arg is not NoneType]
        annotation = members[0] if len(members) == 1 else annotation
    kinds: dict[Any, SettingKind] = {bool: "boolean", int: "integer", float: "float", str: "string"}
    return kinds.get(annotation, "object")


# -- parsing (flagd's syntax) -------------------------------------------------------


def _parse(data: Mapping[str, Any], *, problems: list[str]) -> dict[str, FlagDefinition] | None:
    """The flags flagd can parse (each problem appended); ``None`` when the document's
    shape is wrong."""
    if not isinstance(data, Mapping):
        problems.append("the document must be an object with 'flags'")
        return None
    unknown = sorted(set(data) - TOP_LEVEL_KEYS)
    if unknown:
        problems.append(
            f"unknown top-level key(s) {', '.join(map(repr, unknown))}; a flagd document "
            "has 'flags', '$evaluators' and 'metadata'"
        )
    flags = data.get("flags", {})
    evaluators = data.get("$evaluators") or {}
    if not isinstance(flags, Mapping):
        problems.append("'flags' must be an object of flag key -> flag")
        return None
    if not isinstance(evaluators, Mapping):
        problems.append("'$evaluators' must be an object of name -> json-logic rule")
        return None
    try:
        _flagd_core_accepts({k: v for k, v in data.items() if k != "flags"} | {"flags": {}})
    except _Refused as exc:
        problems.append(f"flagd refuses the document: {exc}")
    definitions: dict[str, FlagDefinition] = {}
    for key, flag in flags.items():
        if not isinstance(key, str) or not key:
            problems.append(f"flag key {key!r}: must be a non-empty string")
            continue
        if not isinstance(flag, Mapping):
            problems.append(f"flag '{key}': must be an object with state and variants")
            continue
        flag_problems = _flagd_problems(key, flag, evaluators)
        problems.extend(flag_problems)
        if flag_problems:
            continue
        targeting = _resolve_refs(flag.get("targeting"), evaluators)
        default = flag.get("defaultVariant")
        definitions[key] = FlagDefinition(
            key=key,
            state=str(flag["state"]),
            variants=MappingProxyType(dict(flag["variants"])),
            default_variant=None if default in (None, "") else _variant_name(default),
            targeting=targeting if isinstance(targeting, Mapping) and targeting else None,
        )
    return definitions


def _document(data: Mapping[str, Any], definitions: dict[str, FlagDefinition]) -> FlagDocument:
    content = canonical_flag_bytes(data)
    return FlagDocument(
        data=data,
        flags=MappingProxyType(definitions),
        content=content,
        sha256=hashlib.sha256(content).hexdigest(),
    )


class _Refused(Exception):
    pass


def _flagd_core_accepts(document: Mapping[str, Any]) -> None:
    """Hand ``document`` to flagd's own parser; ``_Refused`` with its reason."""
    try:
        # A JSON string: flagd's parser consumes (mutates) the objects it is given.
        FlagdCore().set_flags(json.dumps(document))
    except OpenFeatureError as exc:
        cause = exc.__cause__
        reason = exc.error_message or (str(cause) if cause is not None else "") or "invalid"
        raise _Refused(_plain(reason)) from None
    except (TypeError, ValueError) as exc:
        raise _Refused(_plain(str(exc))) from None


def _plain(reason: str) -> str:
    # Python's wording for a dataclass argument that flagd's Flag does not take.
    reason = reason.replace("Flag.__init__() got an unexpected keyword argument", "unknown field")
    return reason.replace("Flag.__init__() missing 1 required positional argument:", "missing")


def _flagd_problems(key: str, flag: Mapping[str, Any], evaluators: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    state = flag.get("state")
    if state not in STATES:
        shown = "missing" if state is None else f"{state!r}"
        problems.append(f"flag '{key}': state is {shown}; it must be ENABLED or DISABLED")
    variants = flag.get("variants")
    if not isinstance(variants, Mapping) or not variants:
        problems.append(f"flag '{key}': variants must be a non-empty object of name -> value")
    if problems:
        return problems
    try:
        _flagd_core_accepts({"$evaluators": dict(evaluators), "flags": {key: dict(flag)}})
    except _Refused as exc:
        problems.append(f"flag '{key}': flagd refuses it: {exc}")
    return problems


def _resolve_refs(node: Any, evaluators: Mapping[str, Any]) -> Any:
    """``node`` with every ``{"$ref": name}`` replaced by that shared evaluator (flagd's
    ``$evaluators``); an unknown name stays, and the targeting check reports it."""
    if isinstance(node, Mapping):
        if set(node) == {"$ref"} and node["$ref"] in evaluators:
            return _resolve_refs(evaluators[node["$ref"]], evaluators)
        return {k: _resolve_refs(v, evaluators) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_refs(item, evaluators) for item in node]
    return node


def _variant_name(value: Any) -> str:
    # flagd turns a boolean a rule returns into "true" / "false".
    return str(value).lower() if isinstance(value, bool) else str(value)


# -- keel's rules -------------------------------------------------------------------


def _keel_problems(flag: FlagDefinition, *, settings: KeelSettings) -> list[str]:
    key = flag.key
    problem = flag_key_problem(key)
    if problem is not None:
        return [f"flag '{key}': {problem}"]
    problems: list[str] = []
    for name, value in flag.variants.items():
        where = f"flag '{key}' variant '{name}'"
        if value is None:
            problems.append(
                f"{where}: null cannot be served by flagd; give a value (to fall back to "
                "the settings below the flags, disable the flag or set no defaultVariant)"
            )
            continue
        try:
            check_live({key: value}, origin=where, settings=settings)
        except ConfigError as exc:
            problems.append(" ".join(line.strip() for line in exc.message.splitlines()))
    if flag.default_variant is not None and flag.default_variant not in flag.variants:
        problems.append(
            f"flag '{key}': defaultVariant '{flag.default_variant}' is not one of its "
            f"variants ({', '.join(flag.variants)})"
        )
    if flag.targeting is not None:
        problems.extend(
            f"flag '{key}' targeting: {problem}"
            for problem in _targeting_problems(flag.targeting, flag.variants)
        )
    return problems


def _targeting_problems(targeting: Mapping[str, Any], variants: Mapping[str, Any]) -> list[str]:
    """What a static look finds wrong in a rule: variants it can return that are not
    declared, operators flagd lacks, attributes keel never sets. Best effort: a
    variant computed at evaluation time is not checked."""
    problems: list[str] = []
    for problem in _walk(targeting, returns=True, variants=variants):
        if problem not in problems:
            problems.append(problem)
    return problems


def _walk(node: Any, *, returns: bool, variants: Mapping[str, Any]) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, returns=False, variants=variants)
        return
    if not isinstance(node, Mapping):
        if returns and isinstance(node, str | bool):
            name = _variant_name(node)
            if name not in variants:
                yield (
                    f"can return '{name}', which is not one of its variants ({', '.join(variants)})"
                )
        return
    if len(node) != 1:
        return  # a literal object, not an operation
    op, args = next(iter(node.items()))
    args = args if isinstance(args, list) else [args]
    if op == "$ref":
        yield f"refers to $evaluators '{args[0]}', which the document does not define"
    elif op not in OPERATORS and op not in _CONTROL_OPERATORS:
        yield f"unknown operator '{op}'"
    elif op == "var":
        yield from _var_problems(args)
    elif op in ("if", "?:"):
        last = len(args) - 1
        for index, arg in enumerate(args):
            branch = index % 2 == 1 or (index == last and len(args) % 2 == 1)
            yield from _walk(arg, returns=returns and branch, variants=variants)
    elif op == "fractional":
        yield from _fractional_problems(args, returns=returns, variants=variants)
    else:
        for arg in args:
            yield from _walk(arg, returns=False, variants=variants)


def _var_problems(args: list[Any]) -> Iterator[str]:
    name = args[0] if args else ""
    if isinstance(name, str) and name:
        head = name.split(".", 1)[0]
        if head != "$flagd" and head not in CONTEXT_ATTRIBUTES:
            yield (
                f"reads the attribute '{name}', which keel never sets; the evaluation "
                f"context has {', '.join(sorted(CONTEXT_ATTRIBUTES))} and $flagd.*"
            )


def _fractional_problems(
    args: list[Any], *, returns: bool, variants: Mapping[str, Any]
) -> Iterator[str]:
    buckets = args if args and isinstance(args[0], list) else args[1:]
    if args and not isinstance(args[0], list):
        yield from _walk(args[0], returns=False, variants=variants)
    if not buckets:
        yield "fractional has no [variant, weight] entries"
    for bucket in buckets:
        if not isinstance(bucket, list) or not 1 <= len(bucket) <= 2:
            yield f"fractional entry {bucket!r} is not [variant, weight]"
            continue
        if len(bucket) == 2 and (not isinstance(bucket[1], int) or isinstance(bucket[1], bool)):
            yield f"fractional weight {bucket[1]!r} of '{bucket[0]}' is not a whole number"
        yield from _walk(bucket[0], returns=returns, variants=variants)
