"""Fused CPU selective scan: a C++ kernel with a hand-written backward.

The kernel (``csrc/selective_scan_cpu.cpp``) is plain C++17 behind a C ABI and is
loaded with :mod:`ctypes`, so it needs only a C++ compiler (``$CXX``, else ``g++``,
``c++`` or ``clang++``) and no torch headers or ninja; it compiles in a few seconds
on first use and is cached under ``$SSAMBA_CACHE_DIR`` (default
``$XDG_CACHE_HOME/ssamba`` or ``~/.cache/ssamba``), keyed by source, compiler, flags
and CPU. Nothing is compiled at import time.

What the kernel does, per (batch, channel) pair, split over
``torch.get_num_threads()`` threads:

* runs the recurrence over L with the state (N rounded up to a multiple of 16) in
  SIMD registers, computing ``exp(dt * A)`` with a vectorised polynomial;
* forward under autograd stores the state at the start of every chunk of
  ``chunk_size()`` steps (``B*D*ceil(L/chunk)*N`` floats), nothing else;
* backward recomputes a chunk's states from its checkpoint into a thread-local
  buffer, then walks the chunk in reverse, accumulating ``dh``; ``dB``/``dC`` go
  to per-thread slots that are summed afterwards (no atomics).

Inputs may be fp32, bf16 or fp16 (computed in fp32, returned in ``u.dtype``); fp64
inputs go to the reference, which computes in fp64. If no compiler is found or
compilation fails, :func:`selective_scan_cpu` warns once and computes with
:func:`~ssamba.ops.scan_reference.selective_scan_reference`.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

from .scan_reference import selective_scan_reference

__all__ = ["bound_benchmark", "chunk_size", "is_compiled", "kernel_forward", "load_library", "selective_scan_cpu", "uses_openmp"]

_SOURCE = Path(__file__).with_name("csrc") / "selective_scan_cpu.cpp"
_ABI_VERSION = 2
# Tried in order until one compiles. -fopenmp puts the kernel's threads on PyTorch's
# OpenMP pool (see run_threads in the source); without it the kernel starts its own.
_FLAG_SETS = (
    ["-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp"],
    ["-O3", "-march=native", "-fopenmp"],
    ["-O3", "-march=native", "-mprefer-vector-width=512"],
    ["-O3", "-march=native"],
    ["-O3"],
)
_COMMON_FLAGS = ["-std=c++17", "-shared", "-fPIC", "-pthread", "-fno-math-errno",
                 "-ffp-contract=fast", "-fvisibility=hidden"]

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_load_error: str | None = None
_warned = False


def _cache_dir() -> Path:
    env = os.environ.get("SSAMBA_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "ext"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ssamba" / "ext"


def _find_compiler() -> str:
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else []
    candidates += ["g++", "c++", "clang++"]
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("no C++ compiler found (set $CXX or install g++)")


def _cpu_fingerprint() -> str:
    # -march=native code is only valid on this CPU model; key the cache on it.
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f.read().splitlines()
                     if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _compile(source: Path, out_dir: Path) -> Path:
    """Compile ``source`` into a cached shared library and return its path."""
    cxx = _find_compiler()
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True,
                                 timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"cannot run C++ compiler {cxx}: {exc}") from exc
    src = source.read_bytes()
    out_dir.mkdir(parents=True, exist_ok=True)
    errors = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256(
            b"\0".join([src, cxx.encode(), version.encode(), " ".join(flags + _COMMON_FLAGS).encode(),
                        _cpu_fingerprint().encode(), platform.machine().encode()])
        ).hexdigest()[:20]
        target = out_dir / f"selective_scan_cpu_{key}.so"
        failed = target.with_suffix(".failed")  # this flag set did not compile: skip it
        if target.exists():
            return target
        if failed.exists():
            errors.append(f"{' '.join(flags)}: failed before, see {failed}")
            continue
        fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=out_dir)
        os.close(fd)
        try:
            proc = subprocess.run([cxx, *flags, *_COMMON_FLAGS, str(source), "-o", tmp],
                                  capture_output=True, text=True, timeout=600)
            if proc.returncode == 0:
                os.replace(tmp, target)  # atomic: concurrent builders are harmless
                return target
            errors.append(f"{' '.join(flags)}: {proc.stderr.strip()[-2000:]}")
            failed.write_text(proc.stderr)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise RuntimeError("compiling the CPU selective scan kernel failed:\n" + "\n".join(errors))


def _configure(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.ssamba_scan_abi_version.restype = i32
    lib.ssamba_scan_chunk_size.restype = i32
    lib.ssamba_scan_lanes.restype = i32
    lib.ssamba_scan_openmp.restype = i32
    lib.ssamba_scan_fwd.restype = i32
    lib.ssamba_scan_fwd.argtypes = [p] * 8 + [i32, i32, p, p, i64, i64, i64, i64, i32, p]
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
                try:
                    path = _compile(_SOURCE, _cache_dir())
                except PermissionError:  # read-only home: build under the temp dir instead
                    fallback = Path(tempfile.gettempdir()) / f"ssamba-{getattr(os, 'getuid', lambda: 0)()}" / "ext"
                    path = _compile(_SOURCE, fallback)
                _lib = _configure(ctypes.CDLL(str(path)))
            except Exception as exc:  # noqa: BLE001 - any failure means "use the reference"
                _load_error = f"{type(exc).__name__}: {exc}"
        if _lib is None and not _warned:
            _warned = True
            warnings.warn(
                "ssamba: the fused CPU selective scan kernel is unavailable "
                f"({_load_error}); falling back to the slow reference scan.",
                RuntimeWarning,
                stacklevel=3,
            )
    return _lib


def is_compiled() -> bool:
    """True if the kernel is loaded (does not trigger compilation)."""
    return _lib is not None


def _require_library() -> ctypes.CDLL:
    lib = load_library()
    if lib is None:
        raise RuntimeError(f"CPU scan kernel unavailable: {_load_error}")
    return lib


def uses_openmp() -> bool:
    """True if the loaded kernel runs its threads on an OpenMP team (compiled with
    -fopenmp); False if it starts its own threads."""
    lib = load_library()
    return bool(lib is not None and lib.ssamba_scan_openmp())


def chunk_size() -> int:
    """Steps between the state checkpoints the forward stores for the backward."""
    return _require_library().ssamba_scan_chunk_size()


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _f32(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().to(torch.float32).contiguous()


def _prepare(u, delta, A, B, C, D, z, delta_bias):
    """fp32 contiguous operands in kernel layout; A, B, C padded to NP states."""
    n = A.shape[1]
    lanes = 16
    np_ = max(lanes, -(-n // lanes) * lanes)
    Ap = _f32(A)
    Bt = B.detach().to(torch.float32).transpose(1, 2)
    Ct = C.detach().to(torch.float32).transpose(1, 2)
    if np_ != n:
        pad = (0, np_ - n)
        Ap = torch.nn.functional.pad(Ap, pad)
        Bt = torch.nn.functional.pad(Bt, pad)
        Ct = torch.nn.functional.pad(Ct, pad)
    return (_f32(u), _f32(delta), Ap.contiguous(), Bt.contiguous(), Ct.contiguous(),
            _f32(D), _f32(z), _f32(delta_bias), np_)


# Channel-steps (one step of one channel: N state updates) below which a second thread
# costs more than it saves (handing work to it, and waking it). On the project's 2-core
# x86 (AVX-512) B=2, D=384, L=57 (44 k steps) ran faster on one thread than on two,
# L=513 (394 k) nearly twice as fast on two.
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


def _forward(lib, ops, softplus: bool, save: bool, reverse: bool = False):
    u, delta, Ap, Bt, Ct, Dv, z, bias, np_ = ops
    batch, dim, L = u.shape
    out = torch.empty_like(u)
    ckpt = None
    if save:
        nchunks = -(-L // lib.ssamba_scan_chunk_size())
        ckpt = torch.empty(batch * dim, nchunks, np_, dtype=torch.float32)
    nthreads, starts, _, _, _ = _partition(batch, dim, L)
    rc = lib.ssamba_scan_fwd(
        _ptr(u), _ptr(delta), _ptr(Ap), _ptr(Bt), _ptr(Ct), _ptr(Dv), _ptr(z), _ptr(bias),
        int(softplus), int(reverse), _ptr(out), _ptr(ckpt), batch, dim, L, np_, nthreads, _ptr(starts))
    if rc != 0:
        raise RuntimeError(f"CPU selective scan forward failed (code {rc})")
    return out, ckpt


class _SelectiveScanCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, lib, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
        ops = _prepare(u, delta, A, B, C, D, z, delta_bias)
        out, ckpt = _forward(lib, ops, delta_softplus, save=True, reverse=reverse)
        ctx.lib = lib
        ctx.softplus = bool(delta_softplus)
        ctx.reverse = bool(reverse)
        ctx.n = A.shape[1]
        ctx.np_ = ops[-1]
        ctx.dtypes = [None if t is None else t.dtype for t in (u, delta, A, B, C, D, z, delta_bias)]
        ctx.save_for_backward(*ops[:-1], ckpt)
        return out.to(u.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout):
        u, delta, Ap, Bt, Ct, Dv, z, bias, ckpt = ctx.saved_tensors
        lib, np_, n = ctx.lib, ctx.np_, ctx.n
        batch, dim, L = u.shape
        gout = gout.to(torch.float32).contiguous()
        nthreads, starts, slot_base, slot_batch, nslots = _partition(batch, dim, L)
        du = torch.empty_like(u)
        ddelta = torch.empty_like(u)
        dA = torch.empty(batch, dim, np_, dtype=torch.float32)
        dBs = torch.zeros(nslots, L, np_, dtype=torch.float32)
        dCs = torch.zeros(nslots, L, np_, dtype=torch.float32)
        dD = torch.empty(batch, dim, dtype=torch.float32) if Dv is not None else None
        dz = torch.empty_like(u) if z is not None else None
        dbias = torch.empty(batch, dim, dtype=torch.float32) if bias is not None else None
        rc = lib.ssamba_scan_bwd(
            _ptr(u), _ptr(delta), _ptr(Ap), _ptr(Bt), _ptr(Ct), _ptr(Dv), _ptr(z), _ptr(bias),
            int(ctx.softplus), int(ctx.reverse), _ptr(ckpt), _ptr(gout), _ptr(du), _ptr(ddelta), _ptr(dA),
            _ptr(dBs), _ptr(dCs), _ptr(dD), _ptr(dz), _ptr(dbias),
            batch, dim, L, np_, nthreads, _ptr(starts), _ptr(slot_base))
        if rc != 0:
            raise RuntimeError(f"CPU selective scan backward failed (code {rc})")
        if nslots == batch:  # every batch element has exactly one slot
            dBt, dCt = dBs, dCs
        else:
            dBt = torch.zeros(batch, L, np_).index_add_(0, slot_batch, dBs)
            dCt = torch.zeros(batch, L, np_).index_add_(0, slot_batch, dCs)
        grads = [
            du,
            ddelta,
            dA.sum(0)[:, :n],
            dBt[:, :, :n].transpose(1, 2),
            dCt[:, :, :n].transpose(1, 2),
            None if dD is None else dD.sum(0),
            dz,
            None if dbias is None else dbias.sum(0),
        ]
        needs = ctx.needs_input_grad[1:9]
        out = [None if (g is None or not need) else g.to(dt)
               for g, need, dt in zip(grads, needs, ctx.dtypes)]
        return (None, *out, None, None)


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
    lib = load_library()
    if lib is None:
        return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    tensors = (u, delta, A, B, C, D, z, delta_bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _SelectiveScanCPU.apply(lib, *tensors, delta_softplus, reverse)
    ops = _prepare(*tensors)
    out, _ = _forward(lib, ops, delta_softplus, save=False, reverse=reverse)
    return out.to(u.dtype)


def bound_benchmark(vector_updates: int, channels: int = 4, threads: int | None = None) -> float:
    """Seconds the kernel's per-state arithmetic takes with no memory traffic.

    Runs ``vector_updates`` 16-lane state updates - the forward's ``exp2(dt*A)`` (same
    polynomial), ``h = a*h + dtu*B`` and ``acc += C*h`` - on register-resident state and
    operands, ``channels`` (1, 2, 4 or 8) independent states interleaved per thread, over
    ``threads`` threads (default ``torch.get_num_threads()``) started as the scan starts
    them. A roofline for :func:`selective_scan_cpu`; used by ``ssamba bench scan``.
    """
    import time

    lib = load_library()
    if lib is None:
        raise RuntimeError(f"CPU scan kernel unavailable: {_load_error}")
    fn = lib.ssamba_scan_bound
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int64, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
    sink = ctypes.c_float()
    nthreads = threads or torch.get_num_threads()
    t0 = time.perf_counter()
    rc = fn(int(vector_updates), int(channels), int(nthreads), ctypes.byref(sink))
    elapsed = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"bound micro-benchmark failed (code {rc})")
    return elapsed


def kernel_forward(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                   z: Tensor | None = None, delta_bias: Tensor | None = None,
                   delta_softplus: bool = False):
    """A function running only the compiled forward on operands converted here, once.

    For measuring the kernel apart from the dtype/layout preparation that
    :func:`selective_scan_cpu` does on every call (``ssamba bench scan`` compares it with
    :func:`bound_benchmark`). Calling the returned function returns the output.
    """
    lib = _require_library()
    ops = _prepare(u, delta, A, B, C, D, z, delta_bias)
    return lambda: _forward(lib, ops, delta_softplus, save=False)[0]
