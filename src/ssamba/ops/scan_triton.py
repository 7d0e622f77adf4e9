"""GPU selective scan in Triton: forward and backward, with no build step.

Triton ships with PyTorch's CUDA wheels, so this backend needs no compiler, no CUDA
toolkit and no ``mamba-ssm``. It computes what :func:`selective_scan_reference` computes
(same contract: ``D``, ``z``, ``delta_bias``, softplus, and ``reverse`` natively), with
the states in fp32 for fp32, bf16 and fp16 inputs, and returns every gradient in its
input's dtype. The kernels are in :mod:`ssamba.ops._triton_kernels`.

Memory does not hold the ``(B, D, L, N)`` states: the forward keeps one state per
``CHUNK`` steps, and the backward recomputes a chunk at a time.

``backend="auto"`` picks it for CUDA tensors where Triton imports, above the reference
and below mamba-ssm's kernel (``"cuda"``) where that is installed: no GPU measurement
has yet compared the two (``scripts/gpu_check.sh`` does). Under ``TRITON_INTERPRET=1`` the
same kernels run on CPU tensors, which is how the tests check it without a GPU; "auto"
never picks it for CPU tensors.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

__all__ = ["CHUNK", "is_available", "runs_interpreted", "selective_scan_triton", "unavailable_reason"]

CHUNK = 32  # steps between the forward's saved states (and the backward's scratch length)
BLOCK_D = 32  # channels per program

_import_error: str | None = None


def _interpreting() -> bool:
    """True under ``TRITON_INTERPRET=1``, which must be set before Triton is imported."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def kernels():
    """The kernel module, imported on first use."""
    from . import _triton_kernels

    return _triton_kernels


def _triton_imports() -> bool:
    global _import_error
    if _import_error is None:
        try:
            import triton  # noqa: F401
        except Exception as error:  # ImportError, or a broken install
            _import_error = f"triton does not import ({type(error).__name__}: {error})"
        else:
            _import_error = ""
    return _import_error == ""


def is_available(u: Tensor) -> bool:
    """For ``backend="auto"``: CUDA tensors, where Triton imports."""
    return u.device.type == "cuda" and _triton_imports()


def runs_interpreted(u: Tensor) -> bool:
    """CPU tensors under ``TRITON_INTERPRET=1``: the backend runs them when asked for by
    name (``backend="triton"``), in Triton's interpreter; "auto" never picks it."""
    return u.device.type == "cpu" and _interpreting() and _triton_imports()


def unavailable_reason(u: Tensor) -> str:
    if not _triton_imports():
        return _import_error
    return f"Triton kernels run on CUDA tensors, not {u.device.type} (or on CPU under TRITON_INTERPRET=1)"


def _blocks(dim: int, d_state: int) -> tuple[int, int]:
    import triton

    return min(BLOCK_D, triton.next_power_of_2(dim)), max(2, triton.next_power_of_2(d_state))


def _check_device(u: Tensor) -> None:
    if u.device.type != "cuda" and not (_interpreting() and u.device.type == "cpu"):
        raise RuntimeError(f"the 'triton' scan backend is unavailable: {unavailable_reason(u)}")


def _operands(u, delta, A, B, C, D, z, delta_bias):
    """Contiguous operands in their own dtypes (the kernels convert to fp32 as they load);
    an absent optional input is passed as ``u`` and switched off by a flag."""
    def c(t):
        return None if t is None else t.detach().contiguous()

    return [c(t) for t in (u, delta, A, B, C, D, z, delta_bias)]


def _forward(operands, delta_softplus: bool, reverse: bool, save: bool):
    u, delta, A, B, C, D, z, bias = operands
    batch, dim, length = u.shape
    d_state = A.shape[1]
    block_d, block_n = _blocks(dim, d_state)
    nchunks = max(1, -(-length // CHUNK))
    out = torch.empty_like(u)
    ckpt = torch.empty(batch, dim, nchunks, block_n, device=u.device, dtype=torch.float32) if save else out
    grid = (batch, -(-dim // block_d))
    kernels().scan_fwd_kernel[grid](
        u, delta, A, B, C, u if D is None else D, u if z is None else z, u if bias is None else bias, out, ckpt,
        length, dim, d_state, nchunks,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None, SOFTPLUS=bool(delta_softplus),
        REVERSE=bool(reverse), SAVE=save, BLOCK_D=block_d, BLOCK_N=block_n, CHUNK=CHUNK)
    return out, (ckpt if save else None)


def _backward(gout, operands, ckpt, delta_softplus: bool, reverse: bool):
    u, delta, A, B, C, D, z, bias = operands
    batch, dim, length = u.shape
    d_state = A.shape[1]
    block_d, block_n = _blocks(dim, d_state)
    nchunks = ckpt.shape[2]
    dblocks = -(-dim // block_d)
    device = u.device
    f32 = dict(device=device, dtype=torch.float32)
    scratch = torch.empty(batch, dim, CHUNK, block_n, **f32)
    gu, gdelta = torch.empty_like(u), torch.empty_like(delta)
    gz = torch.empty_like(z) if z is not None else gu
    ga = torch.empty(batch, dim, d_state, **f32)
    gb = torch.empty(dblocks, batch, d_state, length, **f32)
    gc = torch.empty(dblocks, batch, d_state, length, **f32)
    gd = torch.empty(batch, dim, **f32)
    gbias = torch.empty(batch, dim, **f32)
    kernels().scan_bwd_kernel[(batch, dblocks)](
        u, delta, A, B, C, u if D is None else D, u if z is None else z, u if bias is None else bias, ckpt,
        gout.contiguous(), scratch, gu, gdelta, gz, ga, gb, gc, gd, gbias,
        length, dim, d_state, nchunks, batch,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None, SOFTPLUS=bool(delta_softplus),
        REVERSE=bool(reverse), BLOCK_D=block_d, BLOCK_N=block_n, CHUNK=CHUNK)
    grads = [gu, gdelta, ga.sum(0).to(A.dtype), gb.sum(0).to(B.dtype), gc.sum(0).to(C.dtype),
             None if D is None else gd.sum(0).to(D.dtype), gz if z is not None else None,
             None if bias is None else gbias.sum(0).to(bias.dtype)]
    return grads


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
        operands = _operands(u, delta, A, B, C, D, z, delta_bias)
        out, ckpt = _forward(operands, delta_softplus, reverse, save=True)
        ctx.save_for_backward(*[t if t is not None else torch.empty(0) for t in operands], ckpt)
        ctx.present = [t is not None for t in operands]
        ctx.flags = (bool(delta_softplus), bool(reverse))
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout):
        *saved, ckpt = ctx.saved_tensors
        operands = [t if present else None for t, present in zip(saved, ctx.present)]
        grads = _backward(gout, operands, ckpt, *ctx.flags)
        return (*[g if need else None for g, need in zip(grads, ctx.needs_input_grad)], None, None)


def selective_scan_triton(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                          z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
                          reverse: bool = False) -> Tensor:
    """Same contract as :func:`~ssamba.ops.scan_reference.selective_scan_reference`."""
    _check_device(u)
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
        return _SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    out, _ = _forward(_operands(*inputs), delta_softplus, reverse, save=False)
    return out
