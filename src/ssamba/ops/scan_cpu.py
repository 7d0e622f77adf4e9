"""Fused CPU selective scan: a C++ kernel with a hand-written backward.

The kernel (``csrc/selective_scan_cpu.cpp``) is plain C++17 behind a C ABI and is
loaded with :mod:`ctypes`, so it needs only a C++ compiler (``$CXX``, else ``g++``,
``c++`` or ``clang++``) and no torch headers or ninja; it compiles in a few seconds
on first use and is cached under ``$SSAMBA_CACHE_DIR`` (default
``$XDG_CACHE_HOME/ssamba`` or ``~/.cache/ssamba``), keyed by source, compiler, flags
and CPU. Nothing is compiled at import time.

The cache holds code that is loaded into the process, so it is trusted only if it is
private (see :func:`private_dir`): the cache folder and its ``ext`` folder must be real
folders (not symlinks) owned by the current user with no group or other write permission
(folders made here are 0700 whatever the umask), and a library or ``.failed`` marker is
used only if it is a regular file owned by the user and not writable by others; anything
else is rebuilt or ignored. If the cache folder cannot be made or is not private, the
kernel is built in ``$TMPDIR/ssamba-<uid>`` when that is private, else in a fresh
``mkdtemp`` folder (0700) for this process. Builders of one cache (DDP ranks starting
together) take a file lock, so one compiles and the others load its result.

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
compilation fails, ``backend="auto"`` warns once and computes with
:func:`~ssamba.ops.scan_reference.selective_scan_reference`; an explicit
``backend="cpu"`` raises :class:`KernelUnavailable` saying why.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from ..errors import UserError
from .scan_reference import selective_scan_reference

__all__ = [
    "KernelUnavailable", "UnsafeCacheError", "build_extension", "chunk_size", "is_compiled", "kernel_forward",
    "load_library", "private_dir", "selective_scan_cpu", "selective_scan_cpu_with_state", "uses_openmp",
]

_CSRC = Path(__file__).with_name("csrc")
_SOURCE = _CSRC / "selective_scan_cpu.cpp"
#: Headers of csrc/ the sources include (``-I csrc``); part of every library's cache key.
_HEADERS = ("scan_simd.h",)
_ABI_VERSION = 3
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
                 "-ffp-contract=fast", "-fvisibility=hidden", f"-I{_CSRC}"]

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_load_error: str | None = None
_warned = False


class UnsafeCacheError(PermissionError):
    """A cache folder or file that another user could have written."""


class KernelUnavailable(UserError, RuntimeError):
    """The CPU kernel cannot be built or loaded here (raised for an explicit ``backend="cpu"``)."""


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else -1


def _cache_root() -> Path:
    """The kernel cache's own folder: ``$SSAMBA_CACHE_DIR``, else ``$XDG_CACHE_HOME/ssamba`` or ``~/.cache/ssamba``."""
    env = os.environ.get("SSAMBA_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ssamba"


def _cache_dir() -> Path:
    return _cache_root() / "ext"


def _check_private(path: Path, *, directory: bool) -> None:
    """Raise :class:`UnsafeCacheError` unless ``path`` is a real (not symlinked) folder or
    regular file owned by this user with no group or other write permission."""
    st = os.lstat(path)
    kind = "folder" if directory else "file"
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeCacheError(f"{path} is a symlink, not a {kind}")
    if not (stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)):
        raise UnsafeCacheError(f"{path} is not a {kind}")
    if _uid() >= 0 and st.st_uid != _uid():
        raise UnsafeCacheError(f"{path} is owned by uid {st.st_uid}, not by you (uid {_uid()})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeCacheError(f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})")


def private_dir(root: Path, *parts: str) -> Path:
    """``root/parts...``, made (mode 0700, whatever the umask) where missing, after checking
    that ``root`` and every folder under it on the way are private (see :func:`_check_private`).

    Folders above ``root`` are made as :func:`os.makedirs` makes them and are not checked:
    they are the user's (``~/.cache``) or shared and sticky (``/tmp``). Raises
    :class:`UnsafeCacheError` or :class:`OSError` (e.g. a read-only home).
    """
    folders = [root, *(root.joinpath(*parts[: i + 1]) for i in range(len(parts)))]
    for folder in folders:
        if not os.path.lexists(folder):
            try:
                os.makedirs(folder, mode=0o700)
            except FileExistsError:  # made meanwhile by another process: checked below
                pass
            else:
                os.chmod(folder, 0o700)  # makedirs honours the umask; the leaf must not
        _check_private(folder, directory=True)
    return folders[-1]


def _trusted_file(path: Path) -> bool:
    """True if ``path`` exists and is private; an existing file that is not is removed
    (the folder is ours, so nobody else can put it back) and False is returned."""
    if not os.path.lexists(path):
        return False
    try:
        _check_private(path, directory=False)
        return True
    except UnsafeCacheError as err:
        warnings.warn(f"ssamba: ignoring untrusted kernel cache entry: {err}", RuntimeWarning, stacklevel=4)
        try:
            os.unlink(path)
        except OSError:
            pass
        return False


@contextlib.contextmanager
def _build_lock(folder: Path):
    """An exclusive lock on ``folder/.lock`` (not following symlinks), for one builder at a time."""
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - not POSIX
            pass
        yield
    finally:
        os.close(fd)


def _build_dirs() -> list[tuple[Path, str]]:
    """Where to try to build, with the reason a fallback is used (empty for the first)."""
    return [
        (_cache_root(), ""),
        (Path(tempfile.gettempdir()) / f"ssamba-{_uid() if _uid() >= 0 else 0}", "temp fallback"),
    ]


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
    """Compile ``source`` into a cached shared library in ``out_dir`` and return its path.

    ``out_dir`` and its parent (the cache folder) are made if missing and must be private
    (see :func:`private_dir`)."""
    cxx = _find_compiler()
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True,
                                 timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"cannot run C++ compiler {cxx}: {exc}") from exc
    src = source_text(source)
    out_dir = private_dir(out_dir.parent, out_dir.name)
    with _build_lock(out_dir):
        for stale in out_dir.glob("*.so.tmp"):  # left by a builder killed midway (they hold the lock)
            if _trusted_file(stale):
                stale.unlink()
        return _compile_locked(source, src, cxx, version, out_dir)


def source_text(source: Path) -> bytes:
    """What a library is compiled from: ``source`` and the headers of csrc/ it may include."""
    return source.read_bytes() + b"".join((_CSRC / h).read_bytes() for h in _HEADERS)


def _library_name(stem: str, src: bytes, cxx: str, version: str, flags: list[str]) -> str:
    """The cached library's file name: the source's name and a hash of its text (headers
    included), compiler, flags and CPU."""
    key = hashlib.sha256(
        b"\0".join([src, cxx.encode(), version.encode(), " ".join(flags + _COMMON_FLAGS).encode(),
                    _cpu_fingerprint().encode(), platform.machine().encode()])
    ).hexdigest()[:20]
    return f"{stem}_{key}.so"


def _compile_locked(source: Path, src: bytes, cxx: str, version: str, out_dir: Path) -> Path:
    errors = []
    for flags in _FLAG_SETS:
        target = out_dir / _library_name(source.stem, src, cxx, version, flags)
        failed = target.with_suffix(".failed")  # this flag set did not compile: skip it
        if _trusted_file(target):
            return target
        if _trusted_file(failed):
            errors.append(f"{' '.join(flags)}: failed before, see {failed}")
            continue
        fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=out_dir)
        os.close(fd)
        try:
            proc = subprocess.run([cxx, *flags, *_COMMON_FLAGS, str(source), "-o", tmp],
                                  capture_output=True, text=True, timeout=600)
            if proc.returncode == 0:
                os.chmod(tmp, 0o700)  # the linker creates its output with the umask's mode
                _check_private(Path(tmp), directory=False)
                os.replace(tmp, target)  # atomic
                return target
            errors.append(f"{' '.join(flags)}: {proc.stderr.strip()[-2000:]}")
            fd = os.open(failed, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(proc.stderr)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise RuntimeError(f"compiling {source.name} failed:\n" + "\n".join(errors))


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
                _lib = _configure(ctypes.CDLL(str(_build())))
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


def _build(source: Path = _SOURCE) -> Path:
    """Compile (or find) ``source`` (the kernel by default) in the first usable private
    cache; see the module docstring."""
    problems = []
    for root, reason in _build_dirs():
        try:
            return _compile(source, root / "ext")
        except OSError as err:  # read-only, not ours, symlinked, group-writable...
            problems.append(f"{reason or 'cache'}: {err}")
    private = Path(tempfile.mkdtemp(prefix="ssamba-")) / "ext"  # 0700, unpredictable; this process only
    warnings.warn(
        "ssamba: no private kernel cache (" + "; ".join(problems) + f"); building in {private} for this process",
        RuntimeWarning,
        stacklevel=4,
    )
    return _compile(source, private)


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


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _f32(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().to(torch.float32).contiguous()


def _padded_states(n: int) -> int:
    """The state size the kernel works with: ``n`` rounded up to whole vectors of the
    kernel's lane width (``ssamba_scan_lanes``: 16 floats)."""
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


# The kernel as two PyTorch operators (torch.library), so that torch.compile(fullgraph=True)
# and torch.export trace through the scan: each has a fake implementation giving output
# shapes without running, and autograd reaches the backward operator through the
# forward's registered formula.


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


class _SelectiveScanCPU(torch.autograd.Function):
    """Eager autograd (the operators below are for tracing: through their dispatch an
    eager training step of ssamba_tiny at 10.24 s, batch 2, took 1.56 s instead of 1.21 s)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
        out, ckpt = _scan_forward((u, delta, A, B, C, D, z, delta_bias), delta_softplus, reverse, save=True)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ckpt)
        ctx.flags = (bool(delta_softplus), bool(reverse))
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout):
        grads = _backward_kernel(gout, *ctx.saved_tensors, *ctx.flags)
        return (*[g if need else None for g, need in zip(grads, ctx.needs_input_grad)], None, None)


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
    if torch.compiler.is_compiling():  # traced: the registered operators
        return _scan_fwd_op(*tensors, bool(delta_softplus), bool(reverse), save)[0]
    if save:
        return _SelectiveScanCPU.apply(*tensors, delta_softplus, reverse)
    # Eager inference calls the kernel itself: through the operator's dispatch the peak
    # memory of a 22k-token forward was about 1.6x higher.
    return _scan_forward(tensors, delta_softplus, reverse, save=False)[0]


def build_extension(source: Path) -> ctypes.CDLL:
    """Compile (once, cached on disk like the kernel: private folder, lock, flag fallbacks)
    and load another C++ source that builds against the kernel's headers (``-I`` csrc/,
    e.g. ``scan_simd.h``); for the benchmarks' roofline. Raises on failure."""
    return ctypes.CDLL(str(_build(Path(source))))


def kernel_forward(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                   z: Tensor | None = None, delta_bias: Tensor | None = None,
                   delta_softplus: bool = False):
    """A function running only the compiled forward on operands converted here, once.

    For measuring the kernel apart from the dtype/layout preparation that
    :func:`selective_scan_cpu` does on every call (``ssamba bench scan`` compares it with
    ``ssamba.benchmarks.scan.bound_benchmark``). Calling the returned function returns the output.
    """
    lib = _require_library()
    operands = _prepare(u, delta, A, B, C, D, z, delta_bias)
    return lambda: _forward(lib, operands, delta_softplus, save=False)[0]
