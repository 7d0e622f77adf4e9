"""Clip post-processing: silence trimming, placement in a fixed-length clip, level, background noise.

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


def finish_clip(
    source: np.ndarray,
    length: int,
    position: float,
    level_dbfs: float,
    noise_kind: str | None,
    snr_db: float,
    sample_rate: int,
    noise_seed: int,
) -> np.ndarray:
    """Place ``source`` in a ``length``-sample clip at RMS ``level_dbfs`` (of the source), add
    ``noise_kind`` noise at ``snr_db`` (or none), and keep the peak at most :data:`PEAK_LIMIT`.
    """
    active = rms(trim_silence(source, threshold=1e-2 * float(np.abs(source).max(initial=0.0))))
    if active <= 0:
        raise ValueError("the synthesised source is silent")
    gain = 10.0 ** (level_dbfs / 20.0) / active
    clip = place(source.astype(np.float32) * np.float32(gain), length, position)
    if noise_kind is not None:
        rng = np.random.default_rng(noise_seed)
        noise_rms = 10.0 ** (level_dbfs / 20.0) / 10.0 ** (snr_db / 20.0)
        clip = clip + np.float32(noise_rms) * background_noise(noise_kind, length, sample_rate, rng)
    peak = float(np.abs(clip).max())
    if peak > PEAK_LIMIT:
        clip *= np.float32(PEAK_LIMIT / peak)
    return clip.astype(np.float32)
