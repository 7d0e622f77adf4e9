"""Model registry: preset name -> config, config type -> encoder class."""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Callable

from torch import nn

from ..config import check_keys, validate_config
from .encoder_config import EncoderConfig

_PRESETS: dict[str, Callable[[], EncoderConfig]] = {}
_FAMILIES: dict[str, tuple[type[EncoderConfig], type[nn.Module]]] = {}


def register_family(name: str, config_class: type[EncoderConfig]):
    """Class decorator: ``config_class`` instances build this encoder class."""

    def wrap(model_class):
        model_class.family = name
        _FAMILIES[name] = (config_class, model_class)
        return model_class

    return wrap


def register_preset(fn: Callable[[], EncoderConfig]) -> Callable[[], EncoderConfig]:
    """Function decorator: the function's name becomes a preset returning its config."""
    _PRESETS[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered preset names matching a glob ``pattern``, sorted."""
    return sorted(n for n in _PRESETS if fnmatch.fnmatch(n, pattern))


def family_of(config: EncoderConfig) -> str:
    for name, (config_class, _) in _FAMILIES.items():
        if type(config) is config_class:
            return name
    raise TypeError(f"{type(config).__name__} is not a registered encoder config")


def config_class_of(family: str) -> type[EncoderConfig]:
    if family not in _FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(_FAMILIES)}")
    return _FAMILIES[family][0]


def get_config(name: str, **overrides: Any) -> EncoderConfig:
    """The preset's config with ``overrides`` applied; unknown keys raise ``TypeError``,
    values of the wrong type or out of range :class:`~ssamba.config.ConfigError`."""
    if name not in _PRESETS:
        raise ValueError(f"unknown model {name!r}; available: {list_models()}")
    config = _PRESETS[name]()
    check_keys(type(config), overrides, f"{name}")
    return validate_config(dataclasses.replace(config, **overrides), name)


def model_from_config(config: EncoderConfig, frontend=None, labels: dict | None = None) -> nn.Module:
    """Build the encoder a config describes, with its metadata: the front end of its
    input (a ``FrontendConfig``) and a classifier's classes (see
    :func:`ssamba.models.encoder_config.checked_labels`), each None where unknown."""
    return _FAMILIES[family_of(config)][1](config, frontend=frontend, labels=labels)


def create_model(name: str, *, frontend=None, labels: dict | None = None, **overrides: Any) -> nn.Module:
    """Build preset ``name`` (see :func:`list_models`) with config ``overrides`` and the
    metadata of :func:`model_from_config`, e.g.

    ``create_model("ssamba_tiny", patch_stride=(10, 10), input_tdim=128, num_classes=35)``.
    """
    return model_from_config(get_config(name, **overrides), frontend, labels)
