"""An X-ARES audio encoder (https://github.com/jimbozhang/xares): ssamba's embedder in
the form that benchmark instantiates and calls, so that it runs without a wrapper.

X-ARES builds the encoder class of a Python file with no arguments and calls it on
waveforms ``(batch, samples)`` at ``sampling_rate``, expecting frame embeddings
``(batch, frames, output_dim)``. Which model: ``SSAMBA_XARES_MODEL`` (a model directory,
a shipped encoder's name, a Hub id; default the shipped ``ssast-demo``) and
``SSAMBA_XARES_HOP_FRAMES`` (the hop in 10 ms frames; default the model's own stride).

    python -m xares.run --max-jobs 4 src/ssamba/xares.py src/tasks/*.py
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from .interfaces.embedder import load

DEFAULT_MODEL = "ssast-demo"


class SSAMBAEncoder(nn.Module):
    """``forward(audio (B, S))`` -> timestamp embeddings ``(B, T, D)``; ``sampling_rate``,
    ``output_dim`` and ``hop_size_in_ms`` describe them."""

    def __init__(self, model: str | None = None, hop_frames: int | None = None):
        super().__init__()
        model = model or os.environ.get("SSAMBA_XARES_MODEL", DEFAULT_MODEL)
        hop = hop_frames or (int(os.environ["SSAMBA_XARES_HOP_FRAMES"])
                             if os.environ.get("SSAMBA_XARES_HOP_FRAMES") else None)
        self.embedder = load(model, hop_frames=hop)
        self.sampling_rate = self.embedder.sample_rate
        self.output_dim = self.embedder.embedding_size
        self.hop_size_in_ms = self.embedder.hop_ms

    @torch.no_grad()
    def forward(self, audio: Tensor) -> Tensor:
        if not isinstance(audio, Tensor) or audio.dim() != 2:
            raise ValueError(f"audio must be (batch, samples), got {getattr(audio, 'shape', type(audio))}")
        device = audio.device
        embeddings = self.embedder.timestamp_embeddings(audio.float().cpu())  # equal lengths: equal frame counts
        return torch.stack([emb for emb, _ in embeddings]).to(device)
