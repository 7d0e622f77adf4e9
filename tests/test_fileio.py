"""The one atomic-write helper: all or nothing, no temporary left behind."""

from __future__ import annotations

import numpy as np
import pytest

from ssamba.fileio import atomic_write, atomic_write_text


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
