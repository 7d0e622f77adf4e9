"""SiLU(depthwise conv over time) on the CPU: a C++ kernel, forward and backward.

The Mamba mixer's short depthwise conv (4 taps) and its SiLU are a handful of PyTorch
operations per direction and layer, and their backward a dozen more, each a full pass
over the activations with its own dispatch overhead (``lab/conv_bench.py`` times
both paths). ``csrc/conv_silu_cpu.cpp`` computes the forward in one
pass and the backward (input, weight and bias gradients, the pre-activation recomputed
rather than stored) in two, built and cached like the scan kernel
(:mod:`ssamba.ops.build`: private cache, compiler fallbacks).

:mod:`ssamba.layers.mamba` uses it for fp32 CPU tensors when it builds, and its PyTorch
formulation otherwise (other dtypes and devices, tracing, no compiler); that
formulation is the oracle the kernel is tested against.
"""

from __future__ import annotations

import ctypes
import threading

import torch
from torch import Tensor

from . import build
from .build import pointer as _ptr

__all__ = ["conv_silu_backward", "conv_silu_forward", "is_available"]

SOURCE = build.CSRC / "conv_silu_cpu.cpp"
_ABI_VERSION = 1
#: Elements of ``x`` below which a second thread costs more than it saves.
MIN_ELEMENTS_PER_THREAD = 32_768

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_error: str | None = None
_max_taps = 0  # the kernel's tap limit, read once when it loads


def _load() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use; None if it cannot be built here (no
    warning of its own: the scan kernel's build warns about the same compiler)."""
    global _lib, _error, _max_taps
    if _lib is not None or _error is not None:
        return _lib
    with _lock:
        if _lib is None and _error is None:
            try:
                lib = build.load(SOURCE)
                p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
                lib.ssamba_conv_abi_version.restype = i32
                lib.ssamba_conv_max_taps.restype = i32
                lib.ssamba_conv_silu_fwd.restype = i32
                lib.ssamba_conv_silu_fwd.argtypes = [p, p, p, i32, p, i64, i64, i64, i32, i32]
                lib.ssamba_conv_silu_bwd.restype = i32
                lib.ssamba_conv_silu_bwd.argtypes = [p, p, p, i32, p, p, p, p, i64, i64, i64, i32, i32]
                if lib.ssamba_conv_abi_version() != _ABI_VERSION:
                    raise RuntimeError("stale compiled conv kernel (ABI version mismatch)")
                _max_taps = lib.ssamba_conv_max_taps()
                _lib = lib
            except Exception as exc:  # noqa: BLE001 - any failure means "use PyTorch"
                _error = f"{type(exc).__name__}: {exc}"
    return _lib


def is_available(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> bool:
    """True if the kernel computes SiLU(conv) of ``x`` with ``weight (C, 1, K)`` and
    ``bias``: fp32 CPU tensors, at most the kernel's tap count, eager mode, and the
    kernel builds."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    if bias is not None and bias.dtype != torch.float32:
        return False
    if torch.compiler.is_compiling():
        return False
    return _load() is not None and weight.shape[-1] <= _max_taps


def _threads(x: Tensor) -> int:
    return max(1, min(torch.get_num_threads(), x.shape[1], x.numel() // MIN_ELEMENTS_PER_THREAD))


def _operands(x: Tensor, weight: Tensor, bias: Tensor | None):
    taps = weight.detach().reshape(weight.shape[0], -1).contiguous()
    return x.detach().contiguous(), taps, None if bias is None else bias.detach().contiguous()


def conv_silu_forward(x: Tensor, weight: Tensor, bias: Tensor | None, reverse: bool) -> Tensor:
    """``SiLU(depthwise_conv(x, weight, bias, reverse))`` of ``x (B, C, L)``, ``weight
    (C, 1, K)`` (see :func:`ssamba.ops.conv.depthwise_conv`); no autograd."""
    lib = _load()
    x, taps, bias = _operands(x, weight, bias)
    batch, channels, length = x.shape
    out = torch.empty_like(x)
    rc = lib.ssamba_conv_silu_fwd(_ptr(x), _ptr(taps), _ptr(bias), int(reverse), _ptr(out), batch, channels,
                                  length, taps.shape[1], _threads(x))
    if rc != 0:
        raise RuntimeError(f"CPU conv kernel forward failed (code {rc})")
    return out


def conv_silu_backward(grad: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None, reverse: bool,
                       need_x: bool = True, need_weight: bool = True,
                       need_bias: bool = True) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients ``(x, weight (C, 1, K), bias)`` of :func:`conv_silu_forward` given
    ``grad`` (dL/d output); None for those not asked for (or no bias)."""
    lib = _load()
    x, taps, bias_c = _operands(x, weight, bias)
    grad = grad.detach().to(torch.float32).contiguous()
    batch, channels, length = x.shape
    gx = torch.empty_like(x) if need_x else None
    gw = torch.empty_like(taps) if need_weight else None
    gb = torch.empty(channels, dtype=torch.float32) if need_bias and bias is not None else None
    rc = lib.ssamba_conv_silu_bwd(_ptr(x), _ptr(taps), _ptr(bias_c), int(reverse), _ptr(grad), _ptr(gx), _ptr(gw),
                                  _ptr(gb), batch, channels, length, taps.shape[1], _threads(x))
    if rc != 0:
        raise RuntimeError(f"CPU conv kernel backward failed (code {rc})")
    return gx, None if gw is None else gw.view_as(weight), gb
