"""Kaldi-compatible log-mel filterbank in batched PyTorch.

Computes what Kaldi's ``compute-fbank-feats`` (and ``torchaudio.compliance.kaldi.fbank``
or ``kaldi-native-fbank``) compute with the options SSAST and SSAMBA use: Hanning window,
dither 0, pre-emphasis 0.97, DC removal per frame, FFT size rounded up to a power of two,
power spectrum, HTK-style mel triangles from ``low_freq`` to Nyquist, natural log floored
at float32 epsilon, ``snip_edges=True``, no energy term.

>>> wave = torch.randn(2, 16000)            # (B, S): two 1 s clips at 16 kHz
>>> kaldi_fbank(wave).shape                  # (B, T, F)
torch.Size([2, 98, 128])
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

FLOAT32_EPS = torch.finfo(torch.float32).eps  # the log floor Kaldi uses


def num_frames(num_samples: int, frame_length: int, frame_shift: int) -> int:
    """Frames Kaldi yields with ``snip_edges=True`` (0 if the clip is shorter than a frame)."""
    if num_samples < frame_length:
        return 0
    return 1 + (num_samples - frame_length) // frame_shift


def _mel(freq):
    return 1127.0 * np.log1p(np.asarray(freq, dtype=np.float64) / 700.0)


# The constant tables are cached as NumPy arrays and turned into tensors at each call: a
# tensor cached while torch.export traces would be a fake one, and poison later calls.
@lru_cache(maxsize=16)
def _mel_banks(num_mel_bins: int, fft_size: int, sample_rate: float, low_freq: float, high_freq: float) -> np.ndarray:
    num_fft_bins = fft_size // 2
    mel_low, mel_high = _mel(low_freq), _mel(high_freq)
    delta = (mel_high - mel_low) / (num_mel_bins + 1)
    edges = mel_low + delta * np.arange(num_mel_bins + 2, dtype=np.float64)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (M, 1)
    bin_mel = _mel(np.arange(num_fft_bins, dtype=np.float64) * (sample_rate / fft_size))
    up = (bin_mel - left) / (center - left)
    down = (right - bin_mel) / (right - center)
    weights = np.where(bin_mel <= center, up, down)
    weights = np.where((bin_mel > left) & (bin_mel < right), weights, 0.0)
    weights = np.pad(weights, ((0, 0), (0, 1)))  # zero weight for the Nyquist bin
    weights.flags.writeable = False
    return weights


def mel_banks(
    num_mel_bins: int, fft_size: int, sample_rate: float, low_freq: float, high_freq: float
) -> Tensor:
    """Kaldi's triangular mel filters, ``(num_mel_bins, fft_size // 2 + 1)`` float64.

    Triangles are built on the mel scale between ``num_mel_bins + 2`` equally spaced
    edges; FFT bin ``i`` sits at ``i * sample_rate / fft_size`` Hz. As in Kaldi, the
    Nyquist bin gets no weight. With 128 bins, 16 kHz and a 512-point FFT the lowest
    triangle falls between two FFT bins and is empty: its energy is 0 and its log is
    log(eps).
    """
    return torch.tensor(_mel_banks(num_mel_bins, fft_size, float(sample_rate), float(low_freq), float(high_freq)))


@lru_cache(maxsize=8)
def _hanning_table(length: int) -> np.ndarray:
    window = 0.5 - 0.5 * np.cos(2 * math.pi * np.arange(length, dtype=np.float64) / (length - 1))
    window.flags.writeable = False
    return window


def _hanning(length: int) -> Tensor:
    return torch.tensor(_hanning_table(length))


def waveform_problem(waveform, frame_length: int = 0) -> str:
    """Why ``waveform`` cannot go through the filterbank, or ``""`` if it can: the one
    check of a waveform's type, shape, dtype and samples (finite, and with
    ``frame_length`` > 0 at least one frame of that many samples)."""
    if not isinstance(waveform, Tensor):
        return f"waveform must be a torch.Tensor, got {type(waveform).__name__}"
    if waveform.dim() not in (1, 2):
        return f"waveform must be (samples,) or (batch, samples), got shape {tuple(waveform.shape)}"
    if waveform.numel() == 0:
        return f"no samples: the waveform is empty (shape {tuple(waveform.shape)})"
    if not waveform.is_floating_point():
        return f"waveform must be floating point, got {waveform.dtype}"
    finite = torch.isfinite(waveform)
    if not bool(finite.all()):
        bad = (~finite).reshape(-1, waveform.shape[-1]).any(dim=1).nonzero().flatten().tolist()
        return f"NaN or infinite samples (batch rows {bad})"
    if waveform.shape[-1] < frame_length:
        return f"{waveform.shape[-1]} samples is shorter than one frame ({frame_length} samples)"
    return ""


def validate_waveform(waveform: Tensor, sample_rate: int, expected_rate: int = 16000,
                      frame_length: int = 0) -> Tensor:
    """Return ``waveform`` as a float ``(B, S)`` tensor, or raise ``ValueError`` saying why
    not (:func:`waveform_problem`, and a sample rate other than ``expected_rate``)."""
    if sample_rate != expected_rate:
        raise ValueError(
            f"sample rate {sample_rate} Hz is not the expected {expected_rate} Hz; "
            "resample first (ssamba.frontend.load_audio does this for files)"
        )
    problem = waveform_problem(waveform, frame_length)
    if problem:
        raise ValueError(problem)
    return waveform.unsqueeze(0) if waveform.dim() == 1 else waveform


def frame_geometry(sample_rate: int, frame_length_ms: float, frame_shift_ms: float) -> tuple[int, int]:
    """``(frame_length, frame_shift)`` in samples, as Kaldi rounds them (down)."""
    return int(sample_rate * frame_length_ms / 1000), int(sample_rate * frame_shift_ms / 1000)


def kaldi_fbank(
    waveform: Tensor,
    sample_rate: int = 16000,
    num_mel_bins: int = 128,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    expected_sample_rate: int = 16000,
) -> Tensor:
    """Log-mel filterbank features ``(B, T, num_mel_bins)`` of a ``(B, S)`` or ``(S,)`` waveform.

    ``high_freq <= 0`` is an offset from Nyquist, as in Kaldi. Computation is in float32
    on the waveform's device; the output is float32. Raises ``ValueError`` on a waveform
    that :func:`validate_waveform` refuses.
    """
    frame_length, _ = frame_geometry(sample_rate, frame_length_ms, frame_shift_ms)
    waveform = validate_waveform(waveform, sample_rate, expected_sample_rate, frame_length)
    return compute_fbank(waveform, sample_rate, num_mel_bins, frame_length_ms, frame_shift_ms, preemphasis,
                         remove_dc_offset, low_freq, high_freq)


def compute_fbank(
    waveform: Tensor,
    sample_rate: int,
    num_mel_bins: int,
    frame_length_ms: float,
    frame_shift_ms: float,
    preemphasis: float,
    remove_dc_offset: bool,
    low_freq: float,
    high_freq: float,
) -> Tensor:
    """:func:`kaldi_fbank` of a ``(B, S)`` float waveform of at least one frame that the
    caller has checked (:func:`waveform_problem`)."""
    frame_length, frame_shift = frame_geometry(sample_rate, frame_length_ms, frame_shift_ms)
    nyquist = sample_rate / 2
    high = high_freq if high_freq > 0 else nyquist + high_freq
    if not 0 <= low_freq < high <= nyquist:
        raise ValueError(f"need 0 <= low_freq < high_freq <= {nyquist}, got {low_freq}, {high}")

    fft_size = 1 << (frame_length - 1).bit_length()
    device = waveform.device
    frames = waveform.float().unfold(1, frame_length, frame_shift)  # (B, T, W)
    if remove_dc_offset:
        frames = frames - frames.mean(dim=-1, keepdim=True)
    if preemphasis != 0.0:
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = frames - preemphasis * previous
    frames = frames * _hanning(frame_length).to(device=device, dtype=torch.float32)
    spectrum = torch.fft.rfft(frames, n=fft_size, dim=-1)  # (B, T, fft_size/2 + 1)
    power = spectrum.real.square() + spectrum.imag.square()
    banks = mel_banks(num_mel_bins, fft_size, float(sample_rate), float(low_freq), float(high))
    mel_energy = power @ banks.to(device=device, dtype=torch.float32).T  # (B, T, F)
    return mel_energy.clamp_min(FLOAT32_EPS).log()
