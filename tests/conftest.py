"""Shared fixtures: deterministic generators and synthetic audio."""

from __future__ import annotations

import math
import os

import pytest
import torch

# Without a GPU, Triton kernels can only run in Triton's interpreter, which must be
# chosen before Triton is first imported (its own library functions are decorated then):
# tests/ops/test_scan_triton.py runs the "triton" scan backend that way.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def speech_like(num_samples: int, generator: torch.Generator, sample_rate: int = 16000) -> torch.Tensor:
    """A voiced-speech-like signal: a gliding harmonic series with syllable-rate
    amplitude modulation, plus a little breath noise."""
    t = torch.arange(num_samples, dtype=torch.float64) / sample_rate
    f0 = 120 + 30 * torch.sin(2 * math.pi * 1.5 * t)  # pitch contour, Hz
    phase = 2 * math.pi * torch.cumsum(f0, 0) / sample_rate
    voiced = sum(torch.sin(k * phase) / k for k in range(1, 25) if k * 150 < sample_rate / 2)
    envelope = 0.5 * (1 + torch.sin(2 * math.pi * 4 * t))  # ~4 syllables per second
    noise = 0.02 * torch.randn(num_samples, generator=generator, dtype=torch.float64)
    return (0.1 * envelope * voiced + noise).float()


def save_test_model(path, input_tdim: int = 64):
    """A randomly initialised (seed 0) ``ssamba_test`` model saved in ``path``; returns ``path``."""
    import ssamba

    torch.manual_seed(0)
    ssamba.save_model(ssamba.create_model("ssamba_test", input_tdim=input_tdim), path)
    return path
