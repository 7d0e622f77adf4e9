"""ssamba: self-supervised audio Mamba (SSAMBA) and transformer (SSAST) encoders.

>>> import torch, ssamba
>>> frontend = ssamba.LogMelFrontend(ssamba.FrontendConfig(target_length=128))
>>> model = ssamba.create_model("ssamba_tiny", patch_stride=(10, 10), input_tdim=128)
>>> model.forward_features(frontend(torch.randn(1, 16000))).shape
torch.Size([1, 145, 192])

Names are imported on first use, so ``import ssamba`` (and ``ssamba --help``) does not
pay for importing torch until something needs it.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0.dev0"

_EXPORTS = {
    "FrontendConfig": "ssamba.frontend",
    "LogMelFrontend": "ssamba.frontend",
    "kaldi_fbank": "ssamba.frontend",
    "load_audio": "ssamba.frontend",
    "create_model": "ssamba.models",
    "get_config": "ssamba.models",
    "list_models": "ssamba.models",
    "load_model": "ssamba.models",
    "save_model": "ssamba.models",
    "load": "ssamba.interfaces.embedder",
    "Embedder": "ssamba.interfaces.embedder",
    "explain": "ssamba.interfaces.explain",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ssamba' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
