"""The options every encoder family has (a module of its own: the registry and the
serialization read it without importing the encoders)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from annotated_types import Ge, Le

from ..config import Fraction, Width


@dataclass
class EncoderConfig:
    """Options every encoder family has."""

    embed_dim: Width = 192  # D
    patch_size: tuple[Width, Width] = (16, 16)  # conv kernel (freq, time): 16x16 patch, 128x2 frame
    patch_stride: tuple[Width, Width] = (16, 16)  # 16 to pretrain; 10 to fine-tune patch models
    input_fdim: Width = 128  # mel bins F the position embedding is laid out for
    input_tdim: Annotated[int, Ge(1), Le(1 << 20)] = 1024  # frames T the position embedding is laid out for
    num_classes: Annotated[int, Ge(0), Le(1 << 20)] = 0  # > 0 adds a classifier head (pool -> LayerNorm -> Linear)
    pooling: Literal["mean", "cls"] = "mean"  # "mean" of patch tokens or "cls" (mean of the class tokens)
    drop_path_rate: Fraction = 0.0  # stochastic depth at the last block


def checked_labels(num_classes: int, ids, names=None, multilabel: bool = False) -> dict:
    """The classes of a classifier with ``num_classes`` outputs as an encoder holds them,
    ``{"ids", "names", "multilabel"}`` (names default to the ids); ``ValueError`` if their
    number is not ``num_classes`` or an id or name is not a string."""
    ids = list(ids) if isinstance(ids, (list, tuple)) and all(isinstance(i, str) for i in ids) else None
    names = list(names) if names is not None else ids
    if ids is None or len(ids) != num_classes or not isinstance(names, list) or len(names) != len(ids) \
            or not all(isinstance(n, str) for n in names):
        raise ValueError(f"labels must be {num_classes} string ids (and as many names) for this "
                         f"model's {num_classes} classes")
    return {"ids": ids, "names": names, "multilabel": bool(multilabel)}
