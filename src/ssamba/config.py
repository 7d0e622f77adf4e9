"""Typed dataclass configs: unknown keys are errors that list the valid ones, values are
coerced to the declared type, choices and ranges are checked before anything runs.

The dataclasses are the single source of every option (name, type, default, help). They
are plain stdlib dataclasses annotated with the types below (``Literal`` choices and
``annotated_types`` bounds); :func:`config_from_dict` validates a nested dict against them
with `pydantic <https://docs.pydantic.dev>`_ (lax mode: ``"3e-4"`` becomes ``0.0003`` for a
float, ``"8"`` becomes ``8`` for an int, ``8.5`` is refused for an int; lists become tuples).
``section.key=value`` overrides address nested fields.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import typing
from typing import Annotated, Any, TypeVar

from annotated_types import Ge, Gt, Le, Lt

from .errors import UnknownOptionError, UserError

T = TypeVar("T")

#: Bounds for config fields (checked by :func:`config_from_dict`).
PositiveInt = Annotated[int, Ge(1)]
NonNegativeInt = Annotated[int, Ge(0)]
PositiveFloat = Annotated[float, Gt(0)]
NonNegativeFloat = Annotated[float, Ge(0)]
Probability = Annotated[float, Ge(0), Le(1)]  # [0, 1]
Fraction = Annotated[float, Ge(0), Lt(1)]  # [0, 1)
#: Model sizes: positive and below bounds no real model reaches, so that a hand-edited
#: config.json cannot make even the shape check (a model built on the meta device) run for hours.
Width = Annotated[int, Ge(1), Le(1 << 16)]
Depth = Annotated[int, Ge(1), Le(1024)]


class ConfigError(ValueError):
    """A config value of the wrong type or out of range; the message names every bad field."""


def check_keys(cls: type, keys: Any, what: str | None = None) -> None:
    """Raise :class:`~ssamba.errors.UnknownOptionError` (a ``TypeError``) naming every key
    of ``keys`` that is not a field of ``cls``, and listing the valid ones."""
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(keys) - set(valid))
    if unknown:
        raise UnknownOptionError(
            f"unknown {what or cls.__name__} option(s) {unknown}; valid options: {valid}"
        )


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_keys_deep(cls: type, values: Any, what: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{what} must be a mapping, got {type(values).__name__}")
    check_keys(cls, values, what)
    types = _field_types(cls)
    for key, value in values.items():
        if dataclasses.is_dataclass(types[key]) and isinstance(value, dict):
            _check_keys_deep(types[key], value, f"{what}.{key}")


@functools.lru_cache(maxsize=None)
def _adapter(cls: type):
    from pydantic import TypeAdapter

    return TypeAdapter(cls)


def _format_errors(err, what: str) -> str:
    lines = []
    for e in err.errors(include_url=False):
        where = ".".join([what, *(str(part) for part in e["loc"])])
        message = e["msg"].removeprefix("Value error, ")
        shown = "" if e["type"].startswith("value_error") else f" (got {e.get('input')!r})"
        lines.append(f"{where}: {message}{shown}")
    return "; ".join(lines)


def config_from_dict(cls: type[T], values: dict[str, Any], what: str | None = None) -> T:
    """Build dataclass ``cls`` from ``values`` (recursively): unknown keys raise
    ``TypeError`` listing the valid ones; a value that is not of (or convertible to) its
    field's type, not one of its ``Literal`` choices or out of its bounds raises
    :class:`ConfigError` naming the field, what it should be and what it got."""
    from pydantic import ValidationError

    what = what or cls.__name__
    _check_keys_deep(cls, values, what)
    try:
        config = _adapter(cls).validate_python(values)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, what)) from None
    bad = list(_non_finite(config, what))
    if bad:
        raise ConfigError("; ".join(f"{where}: must be a finite number (got {value!r})" for where, value in bad))
    return config


def _non_finite(value: Any, where: str):
    """``(field, value)`` for every NaN or infinite float in a validated config: no option
    means anything by them, and a bound such as ``Gt(0)`` lets ``inf`` through."""
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield from _non_finite(getattr(value, f.name), f"{where}.{f.name}")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _non_finite(item, f"{where}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        yield where, value


def validate_config(config: T, what: str | None = None) -> T:
    """``config`` (a dataclass built in Python, bypassing :func:`config_from_dict`) checked
    the same way: returns an equal, validated copy or raises :class:`ConfigError`."""
    return config_from_dict(type(config), config_to_dict(config), what)


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
                raise UserError(f"cannot set {dotted!r}: {part!r} is not a section")
        node[leaf] = value
    return out


def _deep_copy(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in values.items()}


def option(default, help: str):
    """A config field with its help text: ``name: int = option(3, "what it is")``. The
    help reaches ``--help`` and the CLI's option lists through :func:`describe_fields`;
    a list or dict default is copied for each instance."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def describe_fields(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(dotted name, default, help)`` of every leaf field, the help from the field's
    metadata (:func:`option`)."""
    rows = []
    types = _field_types(cls)
    for f in dataclasses.fields(cls):
        kind = types[f.name]
        if dataclasses.is_dataclass(kind):
            rows += describe_fields(kind, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "")
        rows.append((f"{prefix}{f.name}", repr(default), f.metadata.get("help", "")))
    return rows
