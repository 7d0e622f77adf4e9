"""Fine-tuning augmentations of SSAST / SSAMBA as pure tensor functions.

Every random draw comes from an explicit ``torch.Generator``, so a clip's augmentation is
a function of the generator's seed only (see :class:`ssamba.data.ClipDataset`, which
seeds one generator per ``(seed, epoch, index)``).

- :func:`spec_augment`: one frequency band and one time band masked (SpecAugment as
  torchaudio's ``FrequencyMasking`` / ``TimeMasking`` with ``iid_masks=False``).
- :func:`mixup_waveforms` with :func:`sample_mixup_lambda`: waveform mixup, lambda ~ Beta(10, 10).
- :func:`add_noise_and_roll`: the "noise" option, applied after normalisation.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

MIXUP_ALPHA = 10.0  # SSAST draws lambda ~ Beta(10, 10)


def _mask_band(size: int, max_width: int, generator: torch.Generator) -> tuple[int, int]:
    """``(start, width)`` of one mask band along an axis of ``size`` entries.

    As torchaudio's ``mask_along_axis``: ``value = U * max_width``, ``start = int(U' *
    (size - value))``, ``width = int(value)``, so the width is uniform over
    ``0 .. max_width - 1``. Widths are clipped to ``size``.
    """
    u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
    value = min(u[0] * max_width, float(size))
    width = int(value)
    start = min(max(int(u[1] * (size - value)), 0), size - width)
    return start, width


def spec_augment(
    spec: Tensor,
    freqm: int,
    timem: int,
    generator: torch.Generator,
    mask_value: float = 0.0,
) -> Tensor:
    """Mask one frequency band and one time band of ``spec`` ``(..., T, F)``.

    The frequency band has a width uniform in ``[0, freqm)`` bins and the time band a
    width uniform in ``[0, timem)`` frames, at uniform positions, the same for every
    leading index. Masked cells are set to ``mask_value``. ``freqm=0`` / ``timem=0``
    disables that mask (and draws nothing). Returns a new tensor of the same shape.

    SSAST masks the *un-normalised* log-mel with 0: the data sets pass this function as
    the front end's augmentation hook, which runs before normalisation
    (:meth:`ssamba.frontend.LogMelFrontend.features`; ``ClipDatasetConfig.mask_after_norm``
    masks the normalised input instead).
    """
    if spec.dim() < 2:
        raise ValueError(f"spec must be (..., T, F), got shape {tuple(spec.shape)}")
    if freqm < 0 or timem < 0:
        raise ValueError(f"mask widths must be >= 0, got freqm={freqm}, timem={timem}")
    out = spec.clone()
    num_frames, num_bins = spec.shape[-2], spec.shape[-1]
    if freqm > 0:  # torchaudio order: frequency first, then time
        start, width = _mask_band(num_bins, freqm, generator)
        out[..., :, start : start + width] = mask_value
    if timem > 0:
        start, width = _mask_band(num_frames, timem, generator)
        out[..., start : start + width, :] = mask_value
    return out


def sample_mixup_lambda(generator: torch.Generator, alpha: float = MIXUP_ALPHA) -> float:
    """Mixup weight ``lambda ~ Beta(alpha, alpha)`` drawn deterministically from ``generator``.

    PyTorch's Beta/Gamma samplers take no generator, so a NumPy generator is seeded from
    one 63-bit draw of ``generator``.
    """
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator).item())
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mixup_waveforms(w1: Tensor, w2: Tensor, lam: float) -> Tensor:
    """SSAST waveform mixup of ``w1`` ``(S1,)`` with ``w2`` ``(S2,)`` -> ``(S1,)``.

    Both are mean-removed, ``w2`` is zero-padded or cropped to ``S1`` samples, the mix is
    ``lam * w1 + (1 - lam) * w2``, and its mean is removed again. Targets must be mixed
    with the same ``lam``: ``lam * t1 + (1 - lam) * t2``.
    """
    if w1.dim() != 1 or w2.dim() != 1:
        raise ValueError(f"waveforms must be 1-D (S,), got {tuple(w1.shape)} and {tuple(w2.shape)}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"mixup lambda must be in [0, 1], got {lam}")
    w1 = w1 - w1.mean()
    w2 = w2 - w2.mean()
    length = w1.shape[0]
    if w2.shape[0] < length:
        w2 = torch.nn.functional.pad(w2, (0, length - w2.shape[0]))
    else:
        w2 = w2[:length]
    mixed = lam * w1 + (1.0 - lam) * w2
    return mixed - mixed.mean()


def add_noise_and_roll(spec: Tensor, generator: torch.Generator, max_shift: int = 10) -> Tensor:
    """SSAST "noise" augmentation of a normalised ``spec`` ``(..., T, F)``.

    Adds ``torch.rand(spec.shape) * u / 10`` with one ``u ~ U(0, 1)`` per call, then rolls
    (circularly) along time by an integer shift uniform in ``[-max_shift, max_shift)``.
    """
    if spec.dim() < 2:
        raise ValueError(f"spec must be (..., T, F), got shape {tuple(spec.shape)}")
    noise = torch.rand(spec.shape, generator=generator, dtype=spec.dtype)
    scale = torch.rand((), generator=generator, dtype=torch.float64).item() / 10
    shift = int(torch.randint(-max_shift, max_shift, (1,), generator=generator).item())
    return torch.roll(spec + noise * scale, shifts=shift, dims=-2)
