"""Reading audio files into 16 kHz mono float waveforms."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)


def resample(waveform: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample a 1-D float array with soxr (high quality)."""
    if orig_rate == target_rate:
        return waveform
    import soxr

    return soxr.resample(waveform, orig_rate, target_rate, quality="HQ")


def load_audio(path: str | Path, sample_rate: int = 16000) -> Tensor:
    """Load ``path`` as a float32 mono waveform ``(S,)`` at ``sample_rate``.

    Multi-channel audio is averaged to mono; other sample rates are resampled (and
    logged at INFO level). Any file ``soundfile`` (libsndfile) reads works: WAV, FLAC,
    OGG, MP3 with a recent libsndfile. An unreadable file raises ``ValueError``
    naming it.
    """
    import soundfile

    path = Path(path)
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several types (LibsndfileError, RuntimeError)
        raise ValueError(f"cannot read audio file {str(path)!r}: {err}") from err
    if data.size == 0:
        raise ValueError(f"audio file {str(path)!r} has no samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if data.shape[1] > 1:
        log.info("%s: downmixed %d channels to mono", path, data.shape[1])
    if rate != sample_rate:
        log.info("%s: resampled %d Hz -> %d Hz", path, rate, sample_rate)
        mono = resample(mono, rate, sample_rate)
    return torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
