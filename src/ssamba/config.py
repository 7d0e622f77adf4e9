"""Strict dataclass configs: unknown keys are errors that list the valid ones."""

from __future__ import annotations

import dataclasses
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


def config_from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Build dataclass ``cls`` from ``values``, refusing unknown keys.

    Lists coming from JSON are turned back into tuples where the field's default is one.
    """
    check_keys(cls, values)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    fixed = {
        k: tuple(v) if isinstance(v, list) and isinstance(defaults.get(k), tuple) else v
        for k, v in values.items()
    }
    return cls(**fixed)


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(config)
