"""Kills at fixed points of long commands (issue 34): a killed ``pretrain`` resumes to the
weights of an uninterrupted run, a killed ``embed`` resumes to the same files, and a
killed ``export`` over an existing file leaves the old file whole. The kill times are
fixed, or a fixed share of an uninterrupted run's time (not drawn at run time); which
phase each lands in depends on the machine's speed, and every phase must be safe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from .conftest import save_test_model
from .training.synth import make_unlabeled

pytestmark = pytest.mark.slow


def _ssamba(*args, cwd=None):
    return subprocess.Popen([sys.executable, "-m", "ssamba.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, start_new_session=True)


def _kill_after(proc: subprocess.Popen, seconds: float) -> bool:
    """SIGKILL ``proc`` after ``seconds`` unless it ended first; whether it was killed."""
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def _weights(folder: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(folder / "final" / "model.safetensors"))


def test_a_killed_pretraining_resumes_to_the_uninterrupted_weights(tmp_path):
    train = make_unlabeled(tmp_path, 64, 0, "pool")
    common = [f"data.train={train}", "model.preset=ssamba_test", "frontend.target_length=64",
              "objective.num_masked=8", "run.epochs=1", "run.steps_per_epoch=40", "run.save_every=5",
              "run.batch_size=4", "run.progress=false", "run.plot=false", "data.num_workers=0"]
    straight = _ssamba("pretrain", *common, f"run.out_dir={tmp_path / 'a'}")
    assert straight.wait(timeout=600) == 0, straight.stderr.read()
    run = tmp_path / "b"
    kills = 0
    for seconds in (4.0, 7.0, 9.0):  # each attempt resumes what the last one left
        proc = _ssamba("pretrain", *common, f"run.out_dir={run}", *(["--resume"] if kills else []))
        kills += _kill_after(proc, seconds)
    last = _ssamba("pretrain", *common, f"run.out_dir={run}", *(["--resume"] if kills else []))
    assert last.wait(timeout=600) == 0, last.stderr.read()
    assert kills >= 1  # at least one kill landed mid-run
    a, b = _weights(tmp_path / "a"), _weights(run)
    assert a.keys() == b.keys() and max(float(np.abs(a[k] - b[k]).max()) for k in a) <= 1e-6
    rows = (run / "metrics.csv").read_text().splitlines()
    assert "step" in rows[0].split(",") and len(rows) > 2  # never left empty or half-written


def test_a_killed_embed_resumes_to_the_same_files(tmp_path):
    rng = np.random.default_rng(0)
    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(40):
        soundfile.write(audio / f"c{i:02d}.wav", 0.1 * rng.standard_normal(16000 * 3), 16000)
    model = save_test_model(tmp_path / "model", input_tdim=64)
    args = [str(audio), "--checkpoint", str(model), "--no-progress", "--batch-size", "2"]
    started = time.monotonic()
    straight = _ssamba("embed", *args, "--out", str(tmp_path / "a"))
    assert straight.wait(timeout=600) == 0, straight.stderr.read()
    proc = _ssamba("embed", *args, "--out", str(tmp_path / "b"))
    killed = _kill_after(proc, 0.7 * (time.monotonic() - started))  # late in the run: files are being written
    again = _ssamba("embed", *args, "--out", str(tmp_path / "b"))
    assert again.wait(timeout=600) == 0, again.stderr.read()
    index = json.loads((tmp_path / "b" / "index.json").read_text())
    assert index["complete"] and len(index["files"]) == 40 and killed
    for i in range(40):
        a, b = np.load(tmp_path / "a" / f"c{i:02d}.npz"), np.load(tmp_path / "b" / f"c{i:02d}.npz")
        assert np.array_equal(a["timestamp_embeddings"], b["timestamp_embeddings"])


def test_a_killed_export_leaves_the_old_file_whole(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    target = tmp_path / "model.onnx"
    first = _ssamba("export", "ssamba_test", str(target), "--no-check")
    assert first.wait(timeout=900) == 0, first.stderr.read()
    old = target.read_bytes()
    for seconds in (2.0, 15.0):
        _kill_after(_ssamba("export", "ssamba_test", str(target), "--no-check"), seconds)
        data = target.read_bytes()
        assert data == old or onnx.load_from_string(data) is not None  # the old file, or a whole new one
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["model.onnx"]
    onnx.checker.check_model(onnx.load(str(target)))
