"""Clip post-processing: silence trimming, placement in a fixed-length clip, level, an
overlapping second event, room reverberation and background noise.

All randomness comes in as arguments or from a generator seeded per clip, so a clip's
samples depend only on its plan entry.
"""

from __future__ import annotations

import numpy as np

NOISE_KINDS = ("white", "pink", "brown", "hum")
PEAK_LIMIT = 0.98


def trim_silence(audio: np.ndarray, threshold: float = 1e-3, margin: int = 0) -> np.ndarray:
    """``audio`` without leading/trailing samples below ``threshold`` (keeping ``margin`` samples)."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return audio[:0]
    start = max(int(loud[0]) - margin, 0)
    stop = min(int(loud[-1]) + 1 + margin, audio.shape[0])
    return audio[start:stop]


def place(audio: np.ndarray, length: int, position: float) -> np.ndarray:
    """Fit ``audio`` into ``length`` samples, like Speech Commands clips.

    Shorter audio is zero-padded and placed at ``position`` (0: at the start, 1: at the end)
    of the free room; longer audio is cropped to the window at ``position`` of the excess.
    """
    n = audio.shape[0]
    out = np.zeros(length, dtype=np.float32)
    if n <= length:
        start = int(round(position * (length - n)))
        out[start : start + n] = audio
    else:
        start = int(round(position * (n - length)))
        out[:] = audio[start : start + length]
    return out


def _shaped_noise(rng: np.random.Generator, length: int, exponent: float) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    white = rng.standard_normal(length)
    if exponent == 0:
        noise = white
    else:
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(length)
        freqs[0] = freqs[1] if length > 1 else 1.0
        spectrum /= freqs ** (exponent / 2)
        noise = np.fft.irfft(spectrum, n=length)
    noise -= noise.mean()
    return noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)


def background_noise(kind: str, length: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS background noise: ``white``, ``pink``, ``brown`` or mains ``hum`` (50/60 Hz harmonics + pink)."""
    if kind == "white":
        noise = _shaped_noise(rng, length, 0.0)
    elif kind == "pink":
        noise = _shaped_noise(rng, length, 1.0)
    elif kind == "brown":
        noise = _shaped_noise(rng, length, 2.0)
    elif kind == "hum":
        t = np.arange(length) / sample_rate
        base = 50.0 if rng.random() < 0.5 else 60.0
        hum = sum(
            rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 2 * np.pi))
            for k in range(1, 8)
        )
        hum = hum / max(float(np.sqrt(np.mean(hum**2))), 1e-12)
        noise = hum + 0.3 * _shaped_noise(rng, length, 1.0)
        noise /= float(np.sqrt(np.mean(noise**2)))
    else:
        raise ValueError(f"unknown noise kind {kind!r}; expected one of {NOISE_KINDS}")
    return noise.astype(np.float32)


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0


def room_impulse(rt60: float, drr_db: float, lowpass_hz: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room impulse response: a unit direct path, then after a 2.5 ms gap a
    diffuse tail of low-passed Gaussian noise decaying by 60 dB over ``rt60`` seconds, scaled
    so that direct / reverberant energy is ``drr_db``.
    """
    if rt60 <= 0:
        raise ValueError(f"rt60 must be positive, got {rt60}")
    gap = int(0.0025 * sample_rate)
    n = max(int(rt60 * sample_rate), 2)
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * 10.0 ** (-3.0 * t / rt60)
    spectrum = np.fft.rfft(tail)
    spectrum /= np.sqrt(1.0 + (np.fft.rfftfreq(n, 1.0 / sample_rate) / lowpass_hz) ** 2)
    tail = np.fft.irfft(spectrum, n=n)
    tail *= 1.0 / np.sqrt(max(float(np.sum(tail**2)), 1e-12) * 10.0 ** (drr_db / 10.0))
    ir = np.zeros(gap + n, dtype=np.float64)
    ir[0] = 1.0
    ir[gap:] += tail
    return ir.astype(np.float32)


def convolve(audio: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """Full linear convolution of ``audio`` with ``ir`` (via the FFT)."""
    n = audio.shape[0] + ir.shape[0] - 1
    size = 1 << max(int(n - 1).bit_length(), 1)
    out = np.fft.irfft(np.fft.rfft(audio, size) * np.fft.rfft(ir, size), size)[:n]
    return out.astype(np.float32)


def active_gain(audio: np.ndarray, level_dbfs: float) -> float:
    """The gain that brings the RMS of ``audio``'s non-silent part to ``level_dbfs``."""
    active = rms(trim_silence(audio, threshold=1e-2 * float(np.abs(audio).max(initial=0.0))))
    if active <= 0:
        raise ValueError("the synthesised source is silent")
    return 10.0 ** (level_dbfs / 20.0) / active


def finish_clip(
    source: np.ndarray,
    length: int,
    position: float,
    level_dbfs: float,
    noise_kind: str | None,
    snr_db: float,
    sample_rate: int,
    noise_seed: int,
    overlay: np.ndarray | None = None,
    overlay_db: float = 0.0,
    overlay_position: float = 0.0,
    reverb: dict | None = None,
) -> np.ndarray:
    """Build a ``length``-sample clip around ``source``.

    In order: ``source`` at RMS ``level_dbfs`` (of its active part) placed at ``position``;
    ``overlay`` (a second event) at ``level_dbfs + overlay_db`` placed at ``overlay_position``;
    the mixture convolved with a :func:`room_impulse` (``reverb``: ``rt60``, ``drr_db``,
    ``lowpass_hz``; or dry) and cut to ``length``; ``noise_kind`` noise at ``snr_db`` below
    the source level (or none); the peak kept at most :data:`PEAK_LIMIT`.
    """
    rng = np.random.default_rng(noise_seed)
    clip = place(source.astype(np.float32) * np.float32(active_gain(source, level_dbfs)), length, position)
    if overlay is not None:
        gain = active_gain(overlay, level_dbfs + overlay_db)
        clip = clip + place(overlay.astype(np.float32) * np.float32(gain), length, overlay_position)
    if reverb is not None:
        ir = room_impulse(reverb["rt60"], reverb["drr_db"], reverb["lowpass_hz"], sample_rate, rng)
        clip = convolve(clip, ir)[:length]
    if noise_kind is not None:
        noise_rms = 10.0 ** (level_dbfs / 20.0) / 10.0 ** (snr_db / 20.0)
        clip = clip + np.float32(noise_rms) * background_noise(noise_kind, length, sample_rate, rng)
    peak = float(np.abs(clip).max())
    if peak > PEAK_LIMIT:
        clip *= np.float32(PEAK_LIMIT / peak)
    return clip.astype(np.float32)
