"""Strict dataclass configs: unknown keys are errors that list the valid ones.

Nested dataclass fields are built from nested dicts; lists become tuples where the
field is a tuple; ``section.key=value`` overrides address nested fields.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def check_keys(cls: type, keys: Any, what: str | None = None) -> None:
    """Raise ``TypeError`` naming every key of ``keys`` that is not a field of ``cls``."""
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(keys) - set(valid))
    if unknown:
        raise TypeError(
            f"unknown {what or cls.__name__} option(s) {unknown}; valid options: {valid}"
        )


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def config_from_dict(cls: type[T], values: dict[str, Any], what: str | None = None) -> T:
    """Build dataclass ``cls`` from ``values`` (recursively), refusing unknown keys."""
    if not isinstance(values, dict):
        raise TypeError(f"{what or cls.__name__} must be a mapping, got {type(values).__name__}")
    check_keys(cls, values, what)
    types = _field_types(cls)
    fixed = {}
    for key, value in values.items():
        kind = types[key]
        if dataclasses.is_dataclass(kind) and isinstance(value, dict):
            value = config_from_dict(kind, value, f"{what + '.' if what else ''}{key}")
        elif isinstance(value, list) and typing.get_origin(kind) is tuple:
            value = tuple(value)
        fixed[key] = value
    return cls(**fixed)


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(config)


def apply_overrides(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set ``{"a.b.c": v}`` entries into a nested dict (a copy); intermediate dicts are made."""
    out = _deep_copy(values)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise TypeError(f"cannot set {dotted!r}: {part!r} is not a section")
        node[leaf] = value
    return out


def _deep_copy(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in values.items()}


def describe_fields(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(dotted name, default, help)`` of every leaf field, help from ``metadata["help"]``
    or the field's inline comment in the source."""
    import inspect
    import re

    comments: dict[str, str] = {}
    try:
        source = inspect.getsource(cls)
        for name, comment in re.findall(r"^\s+(\w+)\s*:[^#\n]*#\s*(.*)$", source, re.M):
            comments[name] = comment.strip()
    except (OSError, TypeError):
        pass
    rows = []
    types = _field_types(cls)
    for f in dataclasses.fields(cls):
        kind = types[f.name]
        if dataclasses.is_dataclass(kind):
            rows += describe_fields(kind, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "")
        rows.append((f"{prefix}{f.name}", repr(default), f.metadata.get("help", comments.get(f.name, ""))))
    return rows
