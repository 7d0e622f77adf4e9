"""``load_model``: a model directory, a training run, a Hub repo id or an official
checkpoint. One level above :mod:`~ssamba.models.serialization` (our files) and
:mod:`~ssamba.models.official` (the research code's), which do not import each other."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .official import OFFICIAL_SUFFIXES, load_official
from .serialization import load_native


def load_model(directory: str | Path, map_location: str = "cpu", **overrides) -> nn.Module:
    """Rebuild a model saved by :func:`ssamba.save_model` (or a training run's model: pass
    the run folder; or a Hugging Face repo id ``org/name[@revision]``); ``overrides``
    change runtime options that do not affect the weights' shapes (e.g. ``scan_backend``,
    ``attention``).

    An official SSAMBA / SSAST checkpoint (a ``.pth`` / ``.pt`` file) is converted on
    the fly (:func:`ssamba.models.official.convert_official`; ``overrides`` may then also
    hold its ``input_tdim`` / ``patch_stride`` / ``dataset`` hints)."""
    if Path(directory).suffix.lower() in OFFICIAL_SUFFIXES and not Path(directory).is_dir():
        return load_official(directory, map_location=map_location, **overrides)
    return load_native(directory, map_location=map_location, **overrides)
