"""CUDA selective scan: delegates to mamba-ssm's fused kernel when it is installed.

``mamba_ssm`` is imported lazily (on the first availability check for a CUDA tensor),
never at ``import ssamba`` time, and any import failure simply makes the backend
unavailable, so ``backend="auto"`` falls through to the next backend.

mamba-ssm's kernel wants ``A``, ``D`` and ``delta_bias`` in fp32 and a variable
``B``/``C`` in the input dtype; this wrapper casts accordingly (differentiably), so
it accepts exactly what the reference accepts.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from .scan_reference import scan_reversed_by_flipping

__all__ = ["is_available", "selective_scan_cuda"]

_fn: Callable[..., Tensor] | None = None
_import_failed = False


def _mamba_selective_scan_fn() -> Callable[..., Tensor] | None:
    global _fn, _import_failed
    if _fn is None and not _import_failed:
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        except Exception:  # ImportError, or a broken CUDA extension (OSError, RuntimeError)
            _import_failed = True
        else:
            _fn = selective_scan_fn
    return _fn


def is_available(u: Tensor) -> bool:
    """True for CUDA tensors when ``mamba_ssm`` imports."""
    return u.device.type == "cuda" and _mamba_selective_scan_fn() is not None


def selective_scan_cuda(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    reverse: bool = False,
) -> Tensor:
    """Same contract as :func:`~ssamba.ops.scan_reference.selective_scan_reference`.

    mamba-ssm's kernel only scans forwards: ``reverse`` flips the operands and the output.
    """
    fn = _mamba_selective_scan_fn()
    if fn is None:
        raise RuntimeError("the 'cuda' scan backend needs mamba-ssm (pip install mamba-ssm)")
    if reverse:
        return scan_reversed_by_flipping(selective_scan_cuda, u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    dtype = u.dtype
    return fn(
        u,
        delta.to(dtype),
        A.float(),
        B.to(dtype),
        C.to(dtype),
        D=None if D is None else D.float(),
        z=None if z is None else z.to(dtype),
        delta_bias=None if delta_bias is None else delta_bias.float(),
        delta_softplus=delta_softplus,
        return_last_state=False,
    )
