"""``ssamba embed`` reliability (issue 15): batch-independent embeddings, NaN files skipped
and named, output names that never collide or escape, atomic outputs, resume and --overwrite."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile

from ssamba.cli import main
from ssamba.interfaces import load
from ssamba.interfaces.files import collect_inputs, embed_files

from ..conftest import save_test_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_test_model(tmp_path_factory.mktemp("model"), input_tdim=256)


def _noise(seconds: float, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


def test_embeddings_do_not_depend_on_the_batch(model_dir, tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    for i, seconds in enumerate((0.5, 0.9, 1.3, 1.7, 2.2, 3.1, 0.02, 4.0)):  # 0.02 s: shorter than a frame
        soundfile.write(folder / f"c{i}.wav", _noise(seconds, i), 16000)
    embedder = load(model_dir)
    one = embed_files([folder], embedder, tmp_path / "one", batch_size=1, progress=False)
    many = embed_files([folder], embedder, tmp_path / "many", batch_size=8, progress=False)
    assert len(one["files"]) == len(many["files"]) == 8
    worst = 0.0
    for record in one["files"]:
        a, b = np.load(tmp_path / "one" / record["embeddings"]), np.load(tmp_path / "many" / record["embeddings"])
        for key in ("scene", "timestamp_embeddings"):
            worst = max(worst, float(np.abs(a[key] - b[key]).max()))
        assert np.array_equal(a["timestamps_ms"], b["timestamps_ms"])
    assert worst < 1e-5, worst
    # and whichever other files are present: the 0.5 s clip alone gives the same embedding
    alone = embed_files([folder / "c0.wav"], embedder, tmp_path / "alone", progress=False)
    assert np.abs(np.load(tmp_path / "alone" / "c0.npz")["scene"] - np.load(tmp_path / "many" / "c0.npz")["scene"]).max() < 1e-5
    assert alone["files"][0]["embeddings"] == "c0.npz"


def test_nan_and_inf_files_are_skipped_and_named(model_dir, tmp_path, capsys):
    folder = tmp_path / "audio"
    folder.mkdir()
    good = _noise(1.0, 0)
    soundfile.write(folder / "good.wav", good, 16000, subtype="FLOAT")
    for name, value in (("nan.wav", np.nan), ("inf.wav", np.inf)):
        bad = good.copy()
        bad[100:103] = value
        soundfile.write(folder / name, bad, 16000, subtype="FLOAT")
    out = tmp_path / "out"
    assert main(["embed", str(folder), "--checkpoint", str(model_dir), "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    index = json.loads((out / "index.json").read_text())
    assert [f["embeddings"] for f in index["files"]] == ["good.npz"]
    failed = {f["audio"].rsplit("/", 1)[-1]: f["error"] for f in index["failed"]}
    assert failed == {"nan.wav": "3 NaN or infinite sample(s)", "inf.wav": "3 NaN or infinite sample(s)"}
    assert "skipped" in err and "nan.wav" in err and "inf.wav" in err


def test_output_names_mirror_paths_and_never_escape(tmp_path):
    for rel in ("x/a.wav", "y/a.wav", "x/a.flac", "x/..wav", "x/.wav", "x/b.c.wav"):
        path = tmp_path / "in" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, _noise(0.1, 0), 16000, format=path.suffix.lstrip(".").upper() or "WAV")
    files = [tmp_path / "in" / rel for rel in ("x/a.wav", "y/a.wav", "x/a.flac", "x/..wav", "x/.wav", "x/b.c.wav")]
    names = [name for _, name in collect_inputs(files)]
    assert names == ["x/a", "y/a", "x/a.flac", "x/..wav", "x/.wav", "x/b.c"]
    assert len(set(names)) == len(names)
    # a folder input names files inside it; the same file twice is embedded once
    pairs = collect_inputs([tmp_path / "in" / "x", tmp_path / "in" / "x" / "a.wav"])
    assert [name for _, name in pairs] == ["..wav", "a", "a.wav", "b.c"]  # (".wav" is hidden: no suffix)


def test_escaping_names_stay_inside_out(model_dir, tmp_path):
    audio = tmp_path / "in"
    audio.mkdir()
    soundfile.write(audio / "..wav", _noise(0.3, 1), 16000, format="WAV")
    out = tmp_path / "out"
    index = embed_files([audio / "..wav"], load(model_dir), out, progress=False)
    assert index["files"][0]["embeddings"] == "..wav.npz" and (out / "..wav.npz").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # nothing beside --out


def test_rerun_resumes_and_overwrite_recomputes(model_dir, tmp_path, capsys):
    folder = tmp_path / "audio"
    folder.mkdir()
    for i in range(3):
        soundfile.write(folder / f"c{i}.wav", _noise(0.4 + 0.2 * i, i), 16000)
    out = tmp_path / "out"
    argv = ["embed", str(folder), "--checkpoint", str(model_dir), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    (out / "c1.npz").unlink()  # as if the first run had been killed before c1
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "resumed: 2 file(s) already embedded" in captured.err and "embedded 1 file(s)" in captured.out
    index = json.loads((out / "index.json").read_text())
    assert len(index["files"]) == 3 and len(index["resumed"]) == 2
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("c[02].npz")} == {k: v for k, v in first.items() if k != "c1.npz"}
    assert main([*argv, "--overwrite"]) == 0
    assert "resumed" not in capsys.readouterr().err
    assert all(p.stat().st_mtime_ns != first[p.name] for p in out.glob("c[02].npz"))
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries
    # the one-file format cannot resume
    set_out = tmp_path / "set"
    assert main([*argv[:-3], "--out", str(set_out), "--format", "set", "--no-progress"]) == 0
    assert main([*argv[:-3], "--out", str(set_out), "--format", "set", "--no-progress"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err


def test_a_run_killed_while_writing_its_first_index_starts_fresh(model_dir, tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    soundfile.write(folder / "c0.wav", _noise(0.5, 0), 16000)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".index.json.k3x_9QzA.tmp.json").write_text('{"made_by"')  # what SIGKILL mid-write leaves
    argv = ["embed", str(folder), "--checkpoint", str(model_dir), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["c0.npz", "index.json"]


def test_bad_batch_size_is_refused(model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["embed", str(tmp_path), "--checkpoint", str(model_dir), "--out", str(tmp_path / "o"), "--batch-size", "0"])
    assert "must be at least 1" in capsys.readouterr().err
