"""Ways in for users: the feature extractor, file embedding, and the HEAR API (ssamba.hear).

Names are imported on first use, so the CLI can register ``ssamba embed`` without torch.
"""

from __future__ import annotations

import importlib

__all__ = ["Embedder", "load"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("ssamba.interfaces.embedder"), name)
    raise AttributeError(f"module 'ssamba.interfaces' has no attribute {name!r}")
