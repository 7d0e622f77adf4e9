"""The one rule for ``device: auto``: CUDA when PyTorch sees a GPU, else the CPU."""

from __future__ import annotations

__all__ = ["resolve_device"]


def resolve_device(name: str) -> str:
    """``"auto"`` -> ``"cuda"`` or ``"cpu"``; any other name as given (``cpu``, ``cuda:1``, ...).
    Imports torch only for ``auto``."""
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name
