"""Just-in-time builds of the C++ kernels: compiled on first use, cached on disk, loaded
with :mod:`ctypes`.

Both CPU kernels (:mod:`~ssamba.ops.scan_cpu`, :mod:`~ssamba.ops.conv_cpu`) are plain
C++17 behind a C ABI, so a build needs only a C++ compiler (``$CXX``, else ``g++``,
``c++`` or ``clang++``), no torch headers or ninja. A library is cached under
``$SSAMBA_CACHE_DIR`` (default ``$XDG_CACHE_HOME/ssamba`` or ``~/.cache/ssamba``), in
``ext/``, named by a hash of its source (the csrc/ headers included), compiler, flags (the
target's among them) and CPU. Nothing is compiled at import time.

``$SSAMBA_CPU_TARGET`` picks the instruction set the kernels are built for
(:data:`TARGETS`): ``native`` (the default), ``avx512``, ``avx2``, ``x86-64`` or ``armv8``.
A target this CPU cannot run is refused before anything is compiled.

The cache holds code that is loaded into the process, so it is trusted only if it is
private (see :func:`private_dir`): the cache folder and its ``ext`` folder must be real
folders (not symlinks) owned by the current user with no group or other write permission
(folders made here are 0700 whatever the umask), and a library or ``.failed`` marker is
used only if it is a regular file owned by the user and not writable by others; anything
else is rebuilt or ignored. If the cache folder cannot be made or is not private, the
library is built in ``$TMPDIR/ssamba-<uid>`` when that is private, else in a fresh
``mkdtemp`` folder (0700) for this process. Builders of one cache (DDP ranks starting
together) take the folder's lock (:func:`ssamba.fileio.file_lock`), so one compiles and
the others load its result; the library is installed by
:func:`ssamba.fileio.atomic_write`, so no process ever loads half of one.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import warnings
from pathlib import Path

from torch import Tensor

from ..fileio import atomic_write, file_lock

__all__ = ["TARGETS", "UnsafeCacheError", "build", "cache_dir", "compile_library", "cpu_target", "flag_sets", "load",
           "pointer", "private_dir", "runnable_here", "target_flags"]

CSRC = Path(__file__).with_name("csrc")
#: Headers of csrc/ the sources include (``-I csrc``); part of every library's cache key.
HEADERS = ("scan_simd.h",)
#: ``SSAMBA_CPU_TARGET``'s values: the instruction set the kernels are built for, with the
#: compiler flags that select it and the /proc/cpuinfo flags (x86) or machine (arm64) a CPU
#: needs to run the result. ``native`` is the building CPU's own; the others let a login
#: node build for compute nodes, and tests build every width on one machine. The kernels'
#: vector width follows (scan_simd.h): 16 lanes for avx512, 8 for avx2, 4 for x86-64 and
#: armv8.
TARGETS = {
    "native": (["-march=native"], ()),
    "avx512": (["-march=skylake-avx512", "-mprefer-vector-width=512"], ("avx512f", "avx2", "fma")),
    "avx2": (["-march=haswell"], ("avx2", "fma")),
    "x86-64": (["-march=x86-64"], ()),
    "armv8": (["-march=armv8-a"], ()),
}
_X86 = ("avx512", "avx2", "x86-64")


def cpu_target() -> str:
    """The target of ``$SSAMBA_CPU_TARGET`` (default ``native``); a :class:`ValueError` for
    an unknown one, listing the valid."""
    target = os.environ.get("SSAMBA_CPU_TARGET", "").strip() or "native"
    if target not in TARGETS:
        raise ValueError(f"SSAMBA_CPU_TARGET={target!r} is not a target; valid: {', '.join(TARGETS)}")
    return target


def target_flags(target: str) -> list[str]:
    """The compiler flags that select ``target``'s instruction set."""
    return list(TARGETS[target][0])


def runnable_here(target: str) -> str | None:
    """Why code built for ``target`` cannot run on this CPU, or None if it can."""
    machine = platform.machine().lower()
    is_x86 = machine in ("x86_64", "amd64", "i686", "i386")
    if target in _X86 and not is_x86:
        return f"{target} code needs an x86-64 CPU; this is {machine}"
    if target == "armv8" and machine not in ("aarch64", "arm64"):
        return f"armv8 code needs an arm64 CPU; this is {machine}"
    missing = [f for f in TARGETS[target][1] if f not in _cpu_flags()]
    if missing and _cpu_flags():
        return f"{target} code needs {', '.join(missing)}, which this CPU lacks"
    return None


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """This CPU's /proc/cpuinfo flags (empty where there is no such file), read once."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def flag_sets(target: str) -> list[list[str]]:
    """The flag sets tried in order until one compiles: the target's flags with OpenMP,
    then without (a compiler with no OpenMP runtime, e.g. clang without libomp); for
    ``native`` on AVX-512, 512-bit vectors first; for ``native``, plain ``-O3`` last (a
    compiler that does not know ``-march=native``). -fopenmp puts the kernels' threads on
    PyTorch's OpenMP pool (see run_threads in scan_simd.h); without it they start their own."""
    arch = [target_flags(target)]
    if target == "native" and "avx512f" in _cpu_flags():
        arch.insert(0, target_flags(target) + ["-mprefer-vector-width=512"])
    sets = [["-O3", *a, *omp] for a in arch for omp in (["-fopenmp"], [])]
    if target == "native":
        sets.append(["-O3"])
    return sets


COMMON_FLAGS = ["-std=c++17", "-shared", "-fPIC", "-pthread", "-fno-math-errno",
                "-ffp-contract=fast", "-fvisibility=hidden", f"-I{CSRC}"]


class UnsafeCacheError(PermissionError):
    """A cache folder or file that another user could have written."""


def pointer(t: Tensor | None) -> int | None:
    """The address of a tensor's data for a ctypes call (None for an absent tensor)."""
    return None if t is None else t.data_ptr()


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else -1


def cache_root() -> Path:
    """The kernels' cache folder: ``$SSAMBA_CACHE_DIR``, else ``$XDG_CACHE_HOME/ssamba`` or ``~/.cache/ssamba``."""
    env = os.environ.get("SSAMBA_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ssamba"


def cache_dir() -> Path:
    """Where the libraries go: ``ext/`` of :func:`cache_root`."""
    return cache_root() / "ext"


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


def build_dirs() -> list[tuple[Path, str]]:
    """Where to try to build, with the reason a fallback is used (empty for the first)."""
    return [
        (cache_root(), ""),
        (Path(tempfile.gettempdir()) / f"ssamba-{_uid() if _uid() >= 0 else 0}", "temp fallback"),
    ]


def find_compiler() -> str:
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


def source_text(source: Path) -> bytes:
    """What a library is compiled from: ``source`` and the headers of csrc/ it may include."""
    return source.read_bytes() + b"".join((CSRC / h).read_bytes() for h in HEADERS)


def library_name(stem: str, src: bytes, cxx: str, version: str, flags: list[str]) -> str:
    """The cached library's file name: the source's name and a hash of its text (headers
    included), compiler, flags and CPU."""
    key = hashlib.sha256(
        b"\0".join([src, cxx.encode(), version.encode(), " ".join(flags + COMMON_FLAGS).encode(),
                    _cpu_fingerprint().encode(), platform.machine().encode()])
    ).hexdigest()[:20]
    return f"{stem}_{key}.so"


class _CompileError(Exception):
    """One flag set did not compile (its compiler output)."""


def first_error(output: str) -> str:
    """The line of a compiler's output that says what went wrong first: its first
    ``error`` line, else its first non-empty line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    return next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else "(no output)")


def compile_library(source: Path, out_dir: Path, target: str | None = None) -> Path:
    """Compile ``source`` for ``target`` (default :func:`cpu_target`) into a cached shared
    library in ``out_dir`` and return its path.

    ``out_dir`` and its parent (the cache folder) are made if missing and must be private
    (see :func:`private_dir`). Each of :func:`flag_sets` is tried in turn; one that failed
    before (a ``.failed`` marker holding the compiler's output) is skipped. If none
    compiles, the :class:`RuntimeError` names the compiler and the first error line."""
    target = target or cpu_target()
    why_not = runnable_here(target)
    if why_not:
        raise RuntimeError(f"SSAMBA_CPU_TARGET={target}: {why_not}")
    cxx = find_compiler()
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"cannot run C++ compiler {cxx}: {exc}") from exc
    src = source_text(source)
    out_dir = private_dir(out_dir.parent, out_dir.name)
    with file_lock(out_dir / ".lock", 0o600):
        for stale in out_dir.glob(".*.tmp.so"):  # left by a builder killed midway (they hold the lock)
            if _trusted_file(stale):
                stale.unlink()
        first, markers = None, []
        for flags in flag_sets(target):
            library = out_dir / library_name(source.stem, src, cxx, version, flags)
            failed = library.with_suffix(".failed")  # this flag set did not compile: skip it
            if _trusted_file(library):
                return library
            if _trusted_file(failed):
                first = first or f"(failed before) {first_error(failed.read_text(errors='replace'))}"
                markers.append(failed)
                continue

            def compile_into(tmp: str) -> None:
                proc = subprocess.run([cxx, *flags, *COMMON_FLAGS, str(source), "-o", tmp],
                                      capture_output=True, text=True, timeout=600)
                if proc.returncode != 0:
                    raise _CompileError(proc.stderr or proc.stdout)

            try:
                atomic_write(library, compile_into, mode=0o700)  # private whatever the linker's umask
            except _CompileError as err:
                output = f"{cxx} {' '.join(flags)}\n{err}"
                first = first or first_error(str(err))
                atomic_write(failed, lambda tmp: Path(tmp).write_text(output), mode=0o600)
                markers.append(failed)
                continue
            _check_private(library, directory=False)
            return library
    name = (version.splitlines() or [cxx])[0]
    raise RuntimeError(f"{cxx} ({name}) could not compile {source.name}: {first} "
                       f"(the compiler's output: {markers[0]})")


def build(source: Path, target: str | None = None) -> Path:
    """Compile (or find) ``source`` for ``target`` (default :func:`cpu_target`) in the first
    usable private cache; see the module docstring."""
    problems = []
    for root, reason in build_dirs():
        try:
            return compile_library(source, root / "ext", target)
        except OSError as err:  # read-only, not ours, symlinked, group-writable...
            problems.append(f"{reason or 'cache'}: {err}")
    private = Path(tempfile.mkdtemp(prefix="ssamba-")) / "ext"  # 0700, unpredictable; this process only
    warnings.warn(
        "ssamba: no private kernel cache (" + "; ".join(problems) + f"); building in {private} for this process",
        RuntimeWarning,
        stacklevel=4,
    )
    return compile_library(source, private, target)


def load(source: Path, target: str | None = None) -> ctypes.CDLL:
    """:func:`build` ``source`` for ``target`` and load it; raises on failure (the callers
    decide what a failure means: a warning and the reference, or PyTorch operations)."""
    return ctypes.CDLL(str(build(Path(source), target)))
