"""Keep freed memory for reuse during training, instead of handing it back to the kernel.

glibc's ``malloc`` serves every request above its *mmap threshold* (128 KiB at start,
raised as such blocks are freed) with a fresh ``mmap`` and returns it to the kernel on
``free``. A training step of the tiny presets allocates and frees thousands of
activation and gradient tensors of 0.1-10 MB, so in many steps the same memory is
mapped again and again, and every 4 KiB page of it is faulted in and zeroed once more
by the kernel: a 2.4 MB ``in_proj`` weight-gradient product on a fresh mapping takes
576 faults, which on a virtual machine cost far more than its arithmetic.
``tests/test_allocator.py`` checks where a 24 MiB block comes from with and without
the policy; ``SSAMBA_MALLOC_POLICY=off ssamba bench train`` against the default shows
what the faults cost in time.

:func:`apply_allocator_policy` sets the two thresholds once for the process
(``mallopt``): blocks up to 32 MiB come from the heap, and freed memory at the top of
the heap is kept up to 1 GiB, so after the first steps a step faults almost never.
Peak memory is what the step needs, as before; what changes is that the process keeps
its peak resident between steps. The ``ssamba`` training commands (``pretrain``,
``finetune``, ``demo``) and the training benchmark apply it; inference and
``import ssamba`` leave the allocator alone.

Overrides: ``SSAMBA_MALLOC_POLICY=off`` touches nothing, and so does any ``MALLOC_*``
setting of glibc's own, ``GLIBC_TUNABLES`` or an ``LD_PRELOAD`` (jemalloc, tcmalloc):
the user chose. Off glibc (macOS, musl, Windows) the policy does nothing.

This module must not import torch.
"""

from __future__ import annotations

import os
import sys

__all__ = ["MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES", "allocator_policy", "apply_allocator_policy"]

#: Blocks up to this size come from the heap (glibc's upper limit for the threshold).
MMAP_THRESHOLD_BYTES = 32 * 2**20
#: Free memory at the top of the heap kept for reuse instead of trimmed.
TRIM_THRESHOLD_BYTES = 2**30

_M_TRIM_THRESHOLD = -1  # glibc's <malloc.h> parameter numbers
_M_MMAP_THRESHOLD = -3
_USER_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX",
              "GLIBC_TUNABLES", "LD_PRELOAD")

_applied: str | None = None


def allocator_policy() -> str:
    """What :func:`apply_allocator_policy` did in this process: ``keep`` (thresholds
    set), ``user`` (left to the user's settings), ``system`` (not applied, turned off or
    not glibc)."""
    return _applied or "system"


def apply_allocator_policy() -> str:
    """Set glibc's mmap and trim thresholds for training (see the module docstring);
    returns :func:`allocator_policy`. Idempotent; safe to call after torch is imported
    (it changes how later allocations are served)."""
    global _applied
    if _applied is not None:
        return _applied
    choice = os.environ.get("SSAMBA_MALLOC_POLICY", "keep").strip().lower()
    if choice not in ("keep", "off"):
        from .errors import UserError

        raise UserError(f"SSAMBA_MALLOC_POLICY must be keep or off, not {choice!r}")
    if choice == "off":
        _applied = "system"
    elif any(os.environ.get(v) for v in _USER_VARS):
        _applied = "user"
    else:
        _applied = "keep" if _mallopt() else "system"
    return _applied


def _mallopt() -> bool:
    """Both thresholds set through glibc's ``mallopt``; False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
