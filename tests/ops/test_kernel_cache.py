"""The CPU kernel's on-disk cache is code that gets loaded: it must be private to the user.

Each attack of issue 15 is replayed on a temporary cache: a library planted under the
computed name, a symlinked cache folder, planted ``.failed`` markers, a group-writable
folder, a umask of 000, a builder killed midway, and two builders starting together.
The kernel is compiled at -O0 here (fast); the flag set is part of the library's name.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from ssamba.ops import build, scan_cpu

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX") or "g++") is None, reason="needs a C++ compiler")

PLANTED = r"""
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen(getenv("SSAMBA_PLANTED_MARK"), "w");
    if (f) { fputs("the planted library ran", f); fclose(f); }
}
"""


SOURCE = scan_cpu.SOURCE


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(build, "flag_sets", lambda target: [["-O0"]])
    return build


def _name(flags=("-O0",)) -> str:
    cxx = build.find_compiler()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    return build.library_name(SOURCE.stem, build.source_text(SOURCE), cxx, version, list(flags))


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _load_in_subprocess(cache_root: Path, mark: Path) -> subprocess.CompletedProcess:
    """Load the kernel from ``cache_root`` in a fresh process (as a user would) at -O0."""
    code = (
        "import warnings; warnings.simplefilter('ignore');"
        "from ssamba.ops import build, scan_cpu; build.flag_sets = lambda target: [['-O0']];"
        "lib = scan_cpu.load_library(); print('loaded' if lib else scan_cpu._load_error)"
    )
    env = {**os.environ, "SSAMBA_CACHE_DIR": str(cache_root), "SSAMBA_PLANTED_MARK": str(mark)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def _plant(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A private cache ``root/ext`` holding a library under the kernel's computed name whose
    constructor writes ``$SSAMBA_PLANTED_MARK``: ``(root, ext, planted library)``."""
    ext = build.private_dir(tmp_path / "cache", "ext")
    source = tmp_path / "planted.c"
    source.write_text(PLANTED)
    target = ext / _name()
    subprocess.run(["gcc", "-shared", "-fPIC", str(source), "-o", str(target)], check=True)
    return ext.parent, ext, target


def test_a_planted_library_under_the_computed_name_never_runs(fast, tmp_path):
    root, ext, target = _plant(tmp_path)
    target.chmod(0o777)  # writable by anyone: whoever wrote it, it is not trusted
    mark = tmp_path / "ran"
    with pytest.warns(RuntimeWarning, match="untrusted"):
        path = fast.compile_library(SOURCE, ext)
    assert path == target and not (os.lstat(target).st_mode & 0o022)
    result = _load_in_subprocess(root, mark)
    assert result.stdout.strip() == "loaded", result.stderr
    assert not mark.exists()  # the rebuilt kernel was loaded, not the planted one


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown to another user needs root")
def test_files_and_folders_of_another_user_are_not_trusted(fast, tmp_path):
    other = 65534  # nobody
    root, ext, target = _plant(tmp_path)
    target.chmod(0o700)
    os.chown(target, other, other)  # mode 0700, but owned by someone else
    mark = tmp_path / "ran"
    assert _load_in_subprocess(root, mark).stdout.strip() == "loaded"
    assert not mark.exists() and os.lstat(target).st_uid == os.getuid()
    # a cache folder owned by another user: refused outright (nothing is built in it)
    theirs = tmp_path / "theirs"
    (theirs / "ext").mkdir(parents=True)
    for p in (theirs, theirs / "ext"):
        os.chown(p, other, other)
        p.chmod(0o700)
    with pytest.raises(build.UnsafeCacheError, match="owned by uid 65534"):
        fast.compile_library(SOURCE, theirs / "ext")
    assert list((theirs / "ext").iterdir()) == []


def test_a_symlinked_cache_folder_is_refused_and_nothing_lands_behind_it(fast, tmp_path):
    attacker = tmp_path / "attacker"
    attacker.mkdir()
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    root.chmod(0o700)
    (root / "ext").symlink_to(attacker)
    with pytest.raises(build.UnsafeCacheError, match="symlink"):
        fast.compile_library(SOURCE, root / "ext")
    linked_root = tmp_path / "linked"
    linked_root.symlink_to(attacker)
    with pytest.raises(build.UnsafeCacheError, match="symlink"):
        fast.compile_library(SOURCE, linked_root / "ext")
    assert list(attacker.iterdir()) == []


def test_group_writable_cache_folder_is_refused(fast, tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    root.chmod(0o777)
    with pytest.raises(build.UnsafeCacheError, match="writable by group or others"):
        fast.compile_library(SOURCE, root / "ext")
    assert not (root / "ext").exists()


def test_planted_failed_markers_do_not_force_the_slow_path(fast, tmp_path):
    ext = build.private_dir(tmp_path / "cache", "ext")
    marker = (ext / _name()).with_suffix(".failed")
    marker.write_text("planted")
    marker.chmod(0o666)
    with pytest.warns(RuntimeWarning, match="untrusted"):
        path = fast.compile_library(SOURCE, ext)
    assert path.name == _name() and path.is_file() and not marker.exists()
    # a marker the user wrote (a real failure) is honoured
    path.unlink()
    marker.write_text("it failed")
    marker.chmod(0o600)
    with pytest.raises(RuntimeError, match=r"g\+\+.* could not compile .*\(failed before\) it failed"):
        fast.compile_library(SOURCE, ext)


def test_umask_000_still_makes_private_folders_and_library(fast, tmp_path):
    old = os.umask(0)
    try:
        path = fast.compile_library(SOURCE, tmp_path / "cache" / "ext")
    finally:
        os.umask(old)
    for p in (tmp_path / "cache", tmp_path / "cache" / "ext"):
        assert _mode(p) == 0o700, (p, oct(_mode(p)))
    assert not _mode(path) & 0o077 and not _mode(path.parent / ".lock") & 0o077


def test_a_builder_killed_midway_leaves_nothing_behind(fast, tmp_path):
    ext = build.private_dir(tmp_path / "cache", "ext")
    stale = ext / f".{_name()}.abc123.tmp.so"  # what fileio.atomic_write names its temporary file
    stale.write_bytes(b"half a library")
    stale.chmod(0o600)
    path = fast.compile_library(SOURCE, ext)
    assert sorted(p.name for p in ext.iterdir()) == sorted([".lock", path.name])


def test_two_builders_at_once_share_one_build(tmp_path):
    root = tmp_path / "cache"
    mark = tmp_path / "unused"
    code = (
        "from ssamba.ops import build, scan_cpu; build.flag_sets = lambda target: [['-O0']];"
        "print(build.compile_library(scan_cpu.SOURCE, build.cache_dir()))"
    )
    env = {**os.environ, "SSAMBA_CACHE_DIR": str(root), "SSAMBA_PLANTED_MARK": str(mark)}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs) and outs[0] == outs[1]
    assert sorted(p.name for p in (root / "ext").iterdir()) == sorted([".lock", Path(outs[0]).name])


def test_unusable_cache_falls_back_to_a_private_temp_folder(fast, tmp_path, monkeypatch):
    unsafe = tmp_path / "shared"
    unsafe.mkdir()
    unsafe.chmod(0o777)
    squatted = tmp_path / "tmp" / "ssamba-squatted"  # a predictable temp name someone else made
    squatted.mkdir(parents=True)
    squatted.chmod(0o777)
    monkeypatch.setattr(build, "build_dirs", lambda: [(unsafe, ""), (squatted, "temp fallback")])
    monkeypatch.setattr(build.tempfile, "tempdir", str(tmp_path / "tmp"))
    with pytest.warns(RuntimeWarning, match="no private kernel cache") as caught:
        path = build.build(SOURCE)
    message = next(str(w.message) for w in caught if "no private kernel cache" in str(w.message))
    assert "writable by group or others" in message
    assert path.parent.parent.parent == tmp_path / "tmp" and path.parent.parent != squatted
    assert _mode(path.parent.parent) == 0o700
    assert list(unsafe.iterdir()) == [] and list(squatted.iterdir()) == []


def test_explicit_cpu_backend_without_compiler_is_an_error(monkeypatch):
    import torch

    from ssamba.ops import selective_scan, selective_scan_reference

    monkeypatch.setattr(scan_cpu, "_lib", None)
    monkeypatch.setattr(scan_cpu, "_load_error", None)
    monkeypatch.setattr(scan_cpu, "_warned", False)
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setenv("PATH", "/nonexistent")
    g = torch.Generator().manual_seed(0)
    u, delta = torch.randn(1, 3, 8, generator=g), torch.rand(1, 3, 8, generator=g)
    A, B, C = -torch.rand(3, 4, generator=g), torch.randn(1, 4, 8, generator=g), torch.randn(1, 4, 8, generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="scan backend 'cpu' is unavailable: .*no C\\+\\+ compiler"):
            selective_scan(u, delta, A, B, C, backend="cpu")
        with pytest.raises(scan_cpu.KernelUnavailable, match="no C\\+\\+ compiler"):
            scan_cpu.selective_scan_cpu(u, delta, A, B, C)
        auto = selective_scan(u, delta, A, B, C)  # auto: the reference, after one warning
    assert torch.equal(auto, selective_scan_reference(u, delta, A, B, C))


def test_the_cpu_target_comes_from_the_environment_and_an_unknown_one_lists_the_valid(monkeypatch):
    monkeypatch.delenv("SSAMBA_CPU_TARGET", raising=False)
    assert build.cpu_target() == "native"
    monkeypatch.setenv("SSAMBA_CPU_TARGET", "avx2")
    assert build.cpu_target() == "avx2" and "-march=haswell" in build.flag_sets("avx2")[0]
    monkeypatch.setenv("SSAMBA_CPU_TARGET", "avx9")
    with pytest.raises(ValueError, match="avx9.*valid: native, avx512, avx2, x86-64, armv8"):
        build.cpu_target()


def test_a_target_this_cpu_cannot_run_is_refused_before_compiling(tmp_path, monkeypatch):
    foreign = "armv8" if build.runnable_here("x86-64") is None else "x86-64"
    monkeypatch.setattr(build, "find_compiler", lambda: pytest.fail("nothing may be compiled"))
    with pytest.raises(RuntimeError, match=f"SSAMBA_CPU_TARGET={foreign}: .*needs"):
        build.compile_library(SOURCE, tmp_path / "cache" / "ext", foreign)


def test_a_failed_build_names_the_compiler_and_its_first_error(tmp_path, monkeypatch):
    broken = tmp_path / "broken.cpp"
    broken.write_text("int main() { return undeclared_name; }\n")
    monkeypatch.setattr(build, "flag_sets", lambda target: [["-O0"], ["-O1"]])
    with pytest.raises(RuntimeError) as err:
        build.compile_library(broken, tmp_path / "cache" / "ext", "native")
    message = str(err.value)
    assert "could not compile broken.cpp" in message and "undeclared_name" in message
    assert message.count("error") == 1 and "\n" not in message  # one line: the first error only
