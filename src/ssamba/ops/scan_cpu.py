"""Fused CPU selective scan: a C++ kernel with a hand-written backward.

The kernel (``csrc/selective_scan_cpu.cpp``) is built on first use and cached by
:mod:`ssamba.ops.build` (a C++ compiler is all it needs), and called through
:mod:`ctypes`. This module is its binding: the operands' layout, the thread partition,
the forward, the backward and the scan from a carried state, registered once, as
PyTorch operators (eager autograd and tracing both go through them).

What the kernel does, per (batch, channel) pair, split over
``torch.get_num_threads()`` threads:

* runs the recurrence over L with the state (N rounded up to whole vectors: 16 floats
  with AVX-512, 8 with AVX2, 4 on the x86-64 baseline and arm64) in SIMD registers, computing ``exp(dt * A)`` with a vectorised polynomial;
* forward under autograd stores the state at the start of every chunk of
  ``chunk_size()`` steps (``B*D*ceil(L/chunk)*N`` floats), nothing else;
* backward recomputes a chunk's states from its checkpoint into a thread-local
  buffer, then walks the chunk in reverse, accumulating ``dh``; ``dB``/``dC`` go
  to per-thread slots that are summed afterwards (no atomics).

Inputs may be fp32, bf16 or fp16 (computed in fp32, returned in ``u.dtype``); fp64
inputs go to the reference, which computes in fp64. If no compiler is found or
compilation fails, ``backend="auto"`` warns once and computes with
:func:`~ssamba.ops.scan_reference.selective_scan_reference`; an explicit
``backend="cpu"`` raises :class:`KernelUnavailable` saying why.
"""

from __future__ import annotations

import ctypes
import threading
import warnings
from typing import Optional

import torch
from torch import Tensor

from ..errors import UserError
from . import build
from .build import pointer as _ptr
from .scan_reference import selective_scan_reference

__all__ = [
    "KernelUnavailable", "SOURCE", "chunk_size", "is_compiled", "load_library", "selective_scan_cpu",
    "selective_scan_cpu_with_state", "uses_openmp",
]

SOURCE = build.CSRC / "selective_scan_cpu.cpp"
_ABI_VERSION = 3

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_load_error: str | None = None
_warned = False


#: What the one warning of a failed build adds: what to install, and what going without costs.
FALLBACK_ADVICE = (
    "SSAMBA runs on the PyTorch reference scan instead, several times slower in inference and "
    "tens of times slower in training (docs/performance.md). To build it, install a C++ compiler "
    "(Debian/Ubuntu: apt install g++; Fedora: dnf install gcc-c++; macOS: xcode-select --install; "
    "conda: conda install -c conda-forge cxx-compiler; Windows: use WSL) or point $CXX at one."
)


class KernelUnavailable(UserError, RuntimeError):
    """The CPU kernel cannot be built or loaded here (raised for an explicit ``backend="cpu"``)."""


def _configure(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.ssamba_scan_abi_version.restype = i32
    lib.ssamba_scan_chunk_size.restype = i32
    lib.ssamba_scan_lanes.restype = i32
    lib.ssamba_scan_openmp.restype = i32
    lib.ssamba_scan_fwd.restype = i32
    lib.ssamba_scan_fwd.argtypes = [p] * 8 + [i32, i32, p, p, p, p, i64, i64, i64, i64, i32, p]
    lib.ssamba_scan_bwd.restype = i32
    lib.ssamba_scan_bwd.argtypes = ([p] * 8 + [i32, i32] + [p] * 10 + [i64, i64, i64, i64, i32, p, p])
    if lib.ssamba_scan_abi_version() != _ABI_VERSION:
        raise RuntimeError("stale compiled kernel (ABI version mismatch)")
    return lib


def load_library() -> ctypes.CDLL | None:
    """Compile (once, cached on disk) and load the kernel; None if that is impossible.

    The first failure emits a single warning; later calls return None silently.
    """
    global _lib, _load_error, _warned
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is None and _load_error is None:
            try:
                _lib = _configure(build.load(SOURCE))
            except Exception as exc:  # noqa: BLE001 - any failure means "use the reference"
                _load_error = f"{type(exc).__name__}: {exc}"
        if _lib is None and not _warned:
            _warned = True
            warnings.warn(f"ssamba: the fast CPU scan is unavailable ({_load_error}). {FALLBACK_ADVICE}",
                          RuntimeWarning, stacklevel=3)
    return _lib


def is_compiled() -> bool:
    """True if the kernel is loaded (does not trigger compilation)."""
    return _lib is not None


def _require_library() -> ctypes.CDLL:
    lib = load_library()
    if lib is None:
        raise KernelUnavailable(f"the CPU scan kernel is unavailable: {_load_error}")
    return lib


def is_available(u: Tensor) -> bool:
    """For ``backend="auto"``: CPU tensors, and the kernel builds and loads (else the
    reference is chosen, after one warning)."""
    if u.device.type != "cpu":
        return False
    if torch.compiler.is_compiling():  # no lock while tracing; the operator loads the library
        return _load_error is None
    return load_library() is not None


def unavailable_reason(u: Tensor) -> str:
    if u.device.type != "cpu":
        return f"the CPU kernel takes CPU tensors, not {u.device.type}"
    return f"the CPU scan kernel is unavailable ({_load_error}); install a C++ compiler or set $CXX, or use backend='auto'"


def uses_openmp() -> bool:
    """True if the loaded kernel runs its threads on an OpenMP team (compiled with
    -fopenmp); False if it starts its own threads."""
    lib = load_library()
    return bool(lib is not None and lib.ssamba_scan_openmp())


def chunk_size() -> int:
    """Steps between the state checkpoints the forward stores for the backward."""
    return _require_library().ssamba_scan_chunk_size()


def _f32(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().to(torch.float32).contiguous()


def _padded_states(n: int) -> int:
    """The state size the kernel works with: ``n`` rounded up to whole vectors of the
    kernel's lane width (``ssamba_scan_lanes``: 16, 8 or 4 floats, by the target)."""
    lanes = _require_library().ssamba_scan_lanes()
    return max(lanes, -(-n // lanes) * lanes)


def _prepare(u, delta, A, B, C, D, z, delta_bias):
    """fp32 contiguous operands in kernel layout: ``(u, delta, A_padded, B_rows, C_rows,
    D_skip, z, delta_bias, n_padded)``, B and C time-major ``(batch, L, n_padded)`` and A, B, C
    zero-padded to ``n_padded`` states (whole vectors of the kernel's lanes)."""
    n = A.shape[1]
    n_padded = _padded_states(n)
    A_padded = _f32(A)
    B_rows = B.detach().to(torch.float32).transpose(1, 2)
    C_rows = C.detach().to(torch.float32).transpose(1, 2)
    if n_padded != n:
        pad = (0, n_padded - n)
        A_padded = torch.nn.functional.pad(A_padded, pad)
        B_rows = torch.nn.functional.pad(B_rows, pad)
        C_rows = torch.nn.functional.pad(C_rows, pad)
    return (_f32(u), _f32(delta), A_padded.contiguous(), B_rows.contiguous(), C_rows.contiguous(),
            _f32(D), _f32(z), _f32(delta_bias), n_padded)


# Channel-steps (one step of one channel: N state updates) below which a second thread
# costs more than it saves (handing work to it, and waking it): a value between a shape
# measured faster on one thread and one measured faster on two (docs/performance.md,
# "Constants and where their values come from").
MIN_STEPS_PER_THREAD = 100_000


def _partition(batch: int, dim: int, length: int) -> tuple[int, Tensor, Tensor, Tensor, int]:
    """Split the batch*dim channels over threads; per-thread dB/dC slot bookkeeping."""
    total = batch * dim
    worth = -(-total * max(length, 1) // MIN_STEPS_PER_THREAD)  # threads the work pays for
    nthreads = max(1, min(torch.get_num_threads(), total, worth))
    starts = [t * total // nthreads for t in range(nthreads + 1)]
    slot_base, slot_batch = [], []
    for t in range(nthreads):
        slot_base.append(len(slot_batch))
        if starts[t + 1] > starts[t]:
            slot_batch.extend(range(starts[t] // dim, (starts[t + 1] - 1) // dim + 1))
    return (nthreads, torch.tensor(starts, dtype=torch.int64),
            torch.tensor(slot_base, dtype=torch.int64),
            torch.tensor(slot_batch, dtype=torch.int64), len(slot_batch))


def _forward(lib, operands, softplus: bool, save: bool, reverse: bool = False, h0: Tensor | None = None,
             hlast: Tensor | None = None):
    """The kernel's forward: ``(out, checkpoints or None)``. ``h0`` / ``hlast``: the state
    before the first step / written after the last, ``(batch * dim, NP)`` fp32 contiguous."""
    u, delta, A_padded, B_rows, C_rows, D_skip, z, bias, n_padded = operands
    batch, dim, L = u.shape
    out = torch.empty_like(u)
    ckpt = None
    if save:
        nchunks = -(-L // lib.ssamba_scan_chunk_size())
        ckpt = torch.empty(batch * dim, nchunks, n_padded, dtype=torch.float32)
    nthreads, starts, _, _, _ = _partition(batch, dim, L)
    rc = lib.ssamba_scan_fwd(
        _ptr(u), _ptr(delta), _ptr(A_padded), _ptr(B_rows), _ptr(C_rows), _ptr(D_skip), _ptr(z), _ptr(bias),
        int(softplus), int(reverse), _ptr(out), _ptr(ckpt), _ptr(h0), _ptr(hlast), batch, dim, L, n_padded, nthreads,
        _ptr(starts))
    if rc != 0:
        raise RuntimeError(f"CPU selective scan forward failed (code {rc})")
    return out, ckpt


def selective_scan_cpu_with_state(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                                  D: Tensor | None = None, z: Tensor | None = None,
                                  delta_bias: Tensor | None = None, delta_softplus: bool = False,
                                  reverse: bool = False, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """:func:`ssamba.ops.selective_scan_with_state` on the kernel (inference only: no
    gradients flow). ``state``: ``(batch, dim, N)``; returns ``(out, state after the
    last step)``, the state fp32."""
    lib = _require_library()
    operands = _prepare(u, delta, A, B, C, D, z, delta_bias)
    batch, dim, _ = u.shape
    n, n_padded = A.shape[1], operands[-1]
    h0 = None
    if state is not None:
        h0 = state.detach().to(torch.float32)
        if n_padded != n:
            h0 = torch.nn.functional.pad(h0, (0, n_padded - n))
        h0 = h0.reshape(batch * dim, n_padded).contiguous()
    hlast = torch.empty(batch * dim, n_padded, dtype=torch.float32)
    out, _ = _forward(lib, operands, delta_softplus, save=False, reverse=reverse, h0=h0, hlast=hlast)
    return out.to(u.dtype), hlast.view(batch, dim, n_padded)[:, :, :n]


def _scan_forward(tensors, delta_softplus: bool, reverse: bool, save: bool):
    """The kernel's forward on the caller's operands: ``(out in u's dtype, checkpoints or None)``."""
    lib = _require_library()
    out, ckpt = _forward(lib, _prepare(*tensors), delta_softplus, save=save, reverse=reverse)
    return out.to(tensors[0].dtype), ckpt


# The kernel as two PyTorch operators (torch.library): the one registration of the scan,
# for eager autograd and for torch.compile(fullgraph=True) and torch.export, which trace
# through it. Each has a fake implementation giving output shapes without running, and
# autograd reaches the backward operator through the forward's registered formula.


@torch.library.custom_op("ssamba::selective_scan_cpu_fwd", mutates_args=(), device_types="cpu")
def _scan_fwd_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                 z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool, reverse: bool,
                 save: bool) -> tuple[Tensor, Tensor]:
    """``(out, checkpoints)``; the checkpoints (for the backward) are empty unless ``save``."""
    out, ckpt = _scan_forward((u, delta, A, B, C, D, z, delta_bias), delta_softplus, reverse, save)
    return out, (ckpt if ckpt is not None else u.new_empty(0, dtype=torch.float32))


@_scan_fwd_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, save):
    batch, dim, length = u.shape
    if not save:
        return u.new_empty(u.shape), u.new_empty(0, dtype=torch.float32)
    nchunks = (length + chunk_size() - 1) // chunk_size()
    return u.new_empty(u.shape), u.new_empty((batch * dim, nchunks, _padded_states(A.shape[1])), dtype=torch.float32)


def _backward_kernel(gout, u, delta, A, B, C, D, z, delta_bias, ckpt, delta_softplus: bool, reverse: bool):
    """Gradients of u, delta, A, B, C, D, z, delta_bias (None for an absent optional
    input), each in its input's dtype, from the forward's checkpoints."""
    lib = _require_library()
    n = A.shape[1]
    u32, delta32, A_padded, B_rows, C_rows, D_skip, z32, bias, n_padded = _prepare(u, delta, A, B, C, D, z, delta_bias)
    batch, dim, L = u.shape
    gout = gout.to(torch.float32).contiguous()
    nthreads, starts, slot_base, slot_batch, nslots = _partition(batch, dim, L)
    du = torch.empty_like(u32)
    ddelta = torch.empty_like(u32)
    dA = torch.empty(batch, dim, n_padded, dtype=torch.float32)
    dBs = torch.zeros(nslots, L, n_padded, dtype=torch.float32)
    dCs = torch.zeros(nslots, L, n_padded, dtype=torch.float32)
    dD = torch.empty(batch, dim, dtype=torch.float32) if D_skip is not None else None
    dz = torch.empty_like(u32) if z32 is not None else None
    dbias = torch.empty(batch, dim, dtype=torch.float32) if bias is not None else None
    rc = lib.ssamba_scan_bwd(
        _ptr(u32), _ptr(delta32), _ptr(A_padded), _ptr(B_rows), _ptr(C_rows), _ptr(D_skip), _ptr(z32), _ptr(bias),
        int(delta_softplus), int(reverse), _ptr(ckpt), _ptr(gout), _ptr(du), _ptr(ddelta), _ptr(dA),
        _ptr(dBs), _ptr(dCs), _ptr(dD), _ptr(dz), _ptr(dbias),
        batch, dim, L, n_padded, nthreads, _ptr(starts), _ptr(slot_base))
    if rc != 0:
        raise RuntimeError(f"CPU selective scan backward failed (code {rc})")
    if nslots == batch:  # every batch element has exactly one slot
        dB_rows, dC_rows = dBs, dCs
    else:
        dB_rows = torch.zeros(batch, L, n_padded).index_add_(0, slot_batch, dBs)
        dC_rows = torch.zeros(batch, L, n_padded).index_add_(0, slot_batch, dCs)
    grads = [du, ddelta, dA.sum(0)[:, :n], dB_rows[:, :, :n].transpose(1, 2), dC_rows[:, :, :n].transpose(1, 2),
             None if dD is None else dD.sum(0), dz, None if dbias is None else dbias.sum(0)]
    dtypes = [None if t is None else t.dtype for t in (u, delta, A, B, C, D, z, delta_bias)]
    return [None if g is None else g.to(dt) for g, dt in zip(grads, dtypes)]


@torch.library.custom_op("ssamba::selective_scan_cpu_bwd", mutates_args=(), device_types="cpu")
def _scan_bwd_op(gout: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                 z: Optional[Tensor], delta_bias: Optional[Tensor], ckpt: Tensor, delta_softplus: bool,
                 reverse: bool) -> list[Tensor]:
    """:func:`_backward_kernel` as an operator (an empty tensor for an absent input's gradient)."""
    grads = _backward_kernel(gout, u, delta, A, B, C, D, z, delta_bias, ckpt, delta_softplus, reverse)
    return [u.new_empty(0) if g is None else g.contiguous() for g in grads]


@_scan_bwd_op.register_fake
def _(gout, u, delta, A, B, C, D, z, delta_bias, ckpt, delta_softplus, reverse):
    return [u.new_empty(0) if t is None else torch.empty_like(t, memory_format=torch.contiguous_format)
            for t in (u, delta, A, B, C, D, z, delta_bias)]


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, save = inputs
    if not save:
        raise RuntimeError("ssamba::selective_scan_cpu_fwd was called with save=False under autograd")
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[1])
    ctx.flags = (bool(delta_softplus), bool(reverse))
    ctx.present = [t is not None for t in (D, z, delta_bias)]


def _backward(ctx, gout, _gckpt):
    u, delta, A, B, C, D, z, delta_bias, ckpt = ctx.saved_tensors
    grads = _scan_bwd_op(gout, u, delta, A, B, C, D, z, delta_bias, ckpt, *ctx.flags)
    grads[5:] = [g if present else None for g, present in zip(grads[5:], ctx.present)]
    return (*grads, None, None, None)


_scan_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def selective_scan_cpu(
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
    """Same contract as :func:`selective_scan_reference`, computed by the fused kernel
    (``reverse`` natively: the kernel walks the sequence backwards, nothing is flipped)."""
    if u.dtype == torch.float64:  # the kernel is fp32; fp64 callers (gradcheck) get fp64
        return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    tensors = (u, delta, A, B, C, D, z, delta_bias)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    if save or torch.compiler.is_compiling():  # under autograd, or traced: the registered operators
        return _scan_fwd_op(*tensors, bool(delta_softplus), bool(reverse), save)[0]
    # Eager inference calls the kernel itself: the operator's dispatch raises the peak
    # memory of a long forward (docs/performance.md).
    return _scan_forward(tensors, delta_softplus, reverse, save=False)[0]
