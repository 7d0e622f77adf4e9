"""The HEAR 2021 API (https://hearbenchmark.com): ``load_model``, ``get_scene_embeddings``,
``get_timestamp_embeddings``.

Audio is ``(n_sounds, n_samples)`` in [-1, 1] at 16 kHz. Timestamp embeddings come every
``hop_frames`` x 10 ms, stamped in milliseconds at the patch centres; scene embeddings
are their mean. The hop is 40 ms by default here, because HEAR asks for at most 50 ms: the
model's patches are re-strided in time, with their position embeddings resampled. This
is the one default that differs from ``ssamba embed`` and ``ssamba.load``, which keep
the model's own stride unless asked otherwise.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .interfaces.embedder import Embedder, load

HOP_FRAMES = 4  # 40 ms: HEAR wants a hop of at most 50 ms


def load_model(model_file_path: str = "", hop_frames: int = HOP_FRAMES, layer: int | str | list = -1) -> Embedder:
    """A model directory / checkpoint / training run folder, the name of an encoder shipped
    with the package (e.g. ``ssast-demo``), or a preset name. An empty
    path gives a randomly initialised ``ssamba_tiny`` (with a warning): ssamba never
    downloads weights."""
    if not model_file_path:
        warnings.warn("no model_file_path: using ssamba_tiny with random weights", stacklevel=2)
        model_file_path = "ssamba_tiny"
    return load(model_file_path, hop_frames=hop_frames, layer=layer)


def _check(audio: Tensor, model: Embedder) -> Tensor:
    if not isinstance(audio, Tensor) or audio.dim() != 2:
        raise ValueError(f"audio must be a (n_sounds, n_samples) tensor, got {getattr(audio, 'shape', type(audio))}")
    return audio.float().to("cpu")


def get_timestamp_embeddings(audio: Tensor, model: Embedder) -> tuple[Tensor, Tensor]:
    """``(n_sounds, n_timestamps, D)`` embeddings and ``(n_sounds, n_timestamps)`` times in ms."""
    pairs = model.timestamp_embeddings(_check(audio, model))
    return torch.stack([e for e, _ in pairs]), torch.stack([t for _, t in pairs]).float()


def get_scene_embeddings(audio: Tensor, model: Embedder) -> Tensor:
    """``(n_sounds, D)``."""
    return model.scene_embeddings(_check(audio, model))
