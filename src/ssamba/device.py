"""The one rule for ``device: auto``: CUDA when PyTorch sees a GPU, else the CPU; and a
CUDA device that is not there is a user error, said before anything runs."""

from __future__ import annotations

__all__ = ["resolve_device"]


def resolve_device(name: str) -> str:
    """``"auto"`` -> ``"cuda"`` or ``"cpu"``; any other name as given (``cpu``, ``cuda:1``, ...).
    A ``cuda`` device that this PyTorch cannot use raises ``ValueError`` saying why.
    Imports torch only for ``auto`` and ``cuda`` names."""
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.split(":")[0] == "cuda":
        import torch

        if not torch.cuda.is_available():
            why = "it was built without CUDA" if torch.version.cuda is None else "it sees no CUDA GPU"
            raise ValueError(f"device {name!r} asked for, but this PyTorch ({torch.__version__}) cannot use "
                             f"one: {why}; use cpu or auto")
        index = name.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ValueError(f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA "
                             f"GPU(s): cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return name
