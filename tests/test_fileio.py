"""The one atomic-write helper: all or nothing, no temporary left behind."""

from __future__ import annotations

import numpy as np
import pytest

from ssamba.fileio import atomic_write, atomic_write_text, is_leftover


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "sub" / "index.json"
    atomic_write_text(target, "old\n")

    def fail(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["index.json"]


def test_the_temporary_keeps_the_suffix_so_numpy_writes_it_whole(tmp_path):
    target = atomic_write(tmp_path / "emb.npz", lambda tmp: np.savez(tmp, a=np.arange(3)))
    assert np.load(target)["a"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["emb.npz"]
    atomic_write_text(tmp_path / "crlf.txt", "a\r\nb")
    assert (tmp_path / "crlf.txt").read_bytes() == b"a\r\nb"


def test_a_killed_writers_temporary_is_recognised_by_its_name(tmp_path):
    seen = []
    atomic_write(tmp_path / "index.json", lambda tmp: (seen.append(tmp), open(tmp, "w").close()))
    atomic_write(tmp_path / "emb.npz", lambda tmp: (seen.append(tmp), np.savez(tmp, a=np.arange(2))))
    assert all(is_leftover(name) for name in seen)  # the names the writer really gives
    for name in ("index.json", "emb.npz", ".hidden", "notes.tmp", ".index.json.tmp"):
        assert not is_leftover(tmp_path / name)


def test_a_writer_library_reporting_a_full_disk_becomes_an_os_error(tmp_path):
    class SafetensorError(Exception):  # how safetensors reports a failed write
        pass

    target = tmp_path / "model.safetensors"
    atomic_write(target, lambda tmp: open(tmp, "wb").write(b"old"))

    def fail(tmp):
        open(tmp, "wb").write(b"half")
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    with pytest.raises(OSError, match="could not write .*model.safetensors"):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    with pytest.raises(TypeError):  # a bug in the writer stays a bug
        atomic_write(target, lambda tmp: None + 1)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (needs root and mount; skipped elsewhere), unmounted afterwards."""
    import os
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root and mount")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def _fill(disk, leave: int):
    import os

    stat = os.statvfs(disk)
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))


def test_on_a_full_disk_fbank_and_checkpoints_fail_in_one_line_and_keep_the_old_files(small_disk, tmp_path, capsys):
    import soundfile
    import torch

    import ssamba
    from ssamba.cli import main
    from ssamba.training.checkpoint import latest_checkpoint, save_checkpoint

    soundfile.write(tmp_path / "a.wav", 0.1 * np.random.default_rng(0).standard_normal(16000), 16000)
    out = small_disk / "a.npy"
    assert main(["fbank", str(tmp_path / "a.wav"), "--out", str(out), "--target-length", "64"]) == 0
    before = out.read_bytes()
    model = ssamba.create_model("ssamba_test")
    save_checkpoint(small_disk / "ckpt", 1, model, {"step": 1, "w": torch.zeros(10)})
    _fill(small_disk, leave=4096)
    capsys.readouterr()
    assert main(["fbank", str(tmp_path / "a.wav"), "--out", str(out), "--target-length", "1024"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ssamba: error: could not write {out}"), err
    assert out.read_bytes() == before
    with pytest.raises(OSError):
        save_checkpoint(small_disk / "ckpt", 2, model, {"step": 2, "w": torch.zeros(100_000)})
    assert latest_checkpoint(small_disk / "ckpt").name == "step-00000001"
    leftovers = [p.name for p in small_disk.rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_written_files_get_the_mode_open_would_give_or_keep_theirs(tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        fresh = atomic_write_text(tmp_path / "fresh.json", "{}")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644  # not mkstemp's 0600
        os.chmod(fresh, 0o600)
        atomic_write_text(fresh, "{ }")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o600  # a replaced file keeps its mode
    finally:
        os.umask(umask)


def test_strict_json_writes_null_for_nan_and_infinity():
    import json

    from ssamba.fileio import strict_json

    text = strict_json({"d_prime": float("inf"), "x": [1.0, float("nan")], "ok": 2.5, "n": (float("-inf"),)})
    assert json.loads(text) == {"d_prime": None, "x": [1.0, None], "ok": 2.5, "n": [None]}
    assert "Infinity" not in text and "NaN" not in text
