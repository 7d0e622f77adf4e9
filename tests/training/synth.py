"""Small labelled audio sets synthesised in the tests: tonal 'instruments' by class."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile

from ssamba.data import ClipEntry, LabelMap, write_label_csv, write_manifest

CLASSES = ("low_steady", "high_steady", "rising", "pulsed")


def clip(kind: str, rng: np.random.Generator, seconds: float = 0.66, rate: int = 16000) -> np.ndarray:
    """A harmonic tone whose pitch contour / envelope depends on ``kind``, with random
    pitch, harmonics and noise so that no two clips are the same."""
    t = np.arange(int(seconds * rate)) / rate
    base = {"low_steady": 180.0, "high_steady": 900.0, "rising": 250.0, "pulsed": 450.0}[kind]
    f0 = base * rng.uniform(0.85, 1.15) * (1 + (1.5 * t / seconds if kind == "rising" else 0))
    phase = 2 * math.pi * np.cumsum(f0) / rate
    n_harm = rng.integers(3, 7)
    tone = sum(np.sin(k * phase + rng.uniform(0, 6.28)) / k for k in range(1, n_harm + 1))
    env = (0.5 + 0.5 * np.sign(np.sin(2 * math.pi * 6 * t))) if kind == "pulsed" else np.ones_like(t)
    return (0.2 * env * tone + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def make_set(root: Path, per_class: int, seed: int, name: str) -> Path:
    """Write ``per_class`` clips of each class and a manifest; returns the manifest path."""
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for label in CLASSES:
        for i in range(per_class):
            path = folder / f"{label}_{i}.wav"
            soundfile.write(path, clip(label, rng), 16000)
            entries.append(ClipEntry(wav=str(path), labels=(label,)))
    manifest = root / f"{name}.json"
    write_manifest(entries, manifest)
    return manifest


def make_labels(root: Path) -> Path:
    path = root / "labels.csv"
    write_label_csv(LabelMap.from_names(list(CLASSES)), path)
    return path


def melody(rng: np.random.Generator, seconds: float = 0.66, rate: int = 16000) -> np.ndarray:
    """Random notes of 80-200 ms (pitch, timbre and loudness drawn per note): every
    stretch of the spectrogram differs, so masked patches can be told apart."""
    out = np.zeros(int(seconds * rate), dtype=np.float64)
    start = 0
    while start < out.size:
        length = int(rng.uniform(0.08, 0.2) * rate)
        t = np.arange(min(length, out.size - start)) / rate
        f0 = 110 * 2 ** rng.uniform(0, 4)  # 110 Hz .. 1.76 kHz
        weights = rng.uniform(0, 1, 8) / np.arange(1, 9)
        note = sum(w * np.sin(2 * math.pi * k * f0 * t) for k, w in enumerate(weights, 1) if k * f0 < 7000)
        out[start:start + t.size] = rng.uniform(0.05, 0.3) * note * np.hanning(t.size)
        start += t.size
    return (out + 0.005 * rng.standard_normal(out.size)).astype(np.float32)


def make_unlabeled(root: Path, count: int, seed: int, name: str) -> Path:
    """``count`` random melodies and their manifest (no labels)."""
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(count):
        path = folder / f"melody_{i}.wav"
        soundfile.write(path, melody(rng), 16000)
        entries.append(ClipEntry(wav=str(path)))
    manifest = root / f"{name}.json"
    write_manifest(entries, manifest)
    return manifest
