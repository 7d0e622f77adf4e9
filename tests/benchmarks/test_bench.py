"""``ssamba bench``: CLI help without torch, the model benchmark's files and its failure
handling, and smoke runs of the scan and training benchmarks. Timings are never asserted."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import pytest

from ssamba.benchmarks import model as model_bench
from ssamba.benchmarks.cli import main as bench_main

TEST_MODELS = ["ssamba_test", "ssast_test_patch:explicit"]  # SDPA runs in the training smoke test


def read_csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_help_builds_without_importing_torch():
    code = (
        "import argparse, contextlib, io, sys\n"
        "from ssamba.benchmarks.cli import add_bench_parser\n"
        "p = argparse.ArgumentParser(prog='ssamba')\n"
        "bench = add_bench_parser(p.add_subparsers(dest='command'))\n"
        "missing = []\n"
        "for name, sub in bench._subparsers._group_actions[0].choices.items():\n"
        "    for a in sub._actions:\n"
        "        if not a.help: missing.append((name, a.dest))\n"
        "    buf = io.StringIO()\n"
        "    with contextlib.redirect_stdout(buf):\n"
        "        try: p.parse_args(['bench', name, '--help'])\n"
        "        except SystemExit as e: assert e.code == 0\n"
        "    print(name, len(buf.getvalue()))\n"
        "print('missing', missing)\n"
        "print('torch', 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "missing []" in out
    assert out.strip().endswith("torch False")
    for name in ("scan", "model", "train"):
        assert f"{name} " in out


def test_frames_for_tokens_follow_the_patch_grid():
    spec = model_bench.parse_spec("ssamba_tiny")
    assert model_bench.frames_for_tokens(spec.config, 512) == 1024
    assert model_bench.frames_for_tokens(spec.config, 22000) == 44000
    assert model_bench.patch_grid(spec.config, 44000) == (8, 2750)
    assert model_bench.frames_for_tokens(spec.config, 20) == 48  # rounded up to whole columns


def test_explicit_attention_estimate_grows_quadratically():
    sdpa = model_bench.parse_spec("ssast_tiny_patch:sdpa")
    explicit = model_bench.parse_spec("ssast_tiny_patch:explicit")
    assert explicit.config.attention == "explicit"
    frames = model_bench.frames_for_tokens(explicit.config, 22000)
    matrices = 2 * 3 * 22002**2 * 4  # score matrix and its softmax, 3 heads, fp32
    assert model_bench.estimate_bytes(explicit, frames, 1) - model_bench.estimate_bytes(sdpa, frames, 1) == matrices


def test_slopes_ratios_and_crossover_from_rows():
    rows = []
    for t in (1000, 2000, 4000, 8000):
        rows.append({"model": "a", "tokens": t, "status": "ok", "time_s": 1e-3 * t, "peak_extra_mb": 0.01 * t})
        rows.append({"model": "b", "tokens": t, "status": "ok", "time_s": 1e-6 * t * t + 1.0,
                     "peak_extra_mb": 1e-5 * t * t})
    rows.append({"model": "b", "tokens": 16000, "status": "skipped"})
    s = model_bench.summarize(rows, ["a", "b"], (2000, 8000))
    assert s["slopes"]["a"]["time"]["all"] == pytest.approx(1.0)
    assert s["slopes"]["b"]["memory"]["range"] == pytest.approx(2.0)
    assert [e["tokens"] for e in s["ratios"]["b"]] == [1000, 2000, 4000, 8000]
    assert s["ratios"]["b"][0]["time"] == pytest.approx(1.0 / 2.0)
    # a = t/1000 s; b = (t/1000)^2 + 1 s: a is faster everywhere measured
    assert s["crossovers"]["b"]["measured"] == 1000
    c = model_bench.crossover({1000: 1.0, 2000: 2.0, 4000: 3.0}, {1000: 0.5, 2000: 1.5, 4000: 6.0})
    assert c["measured"] == 4000 and c["slower_at"] == 2000 and 2000 < c["estimate"] < 4000
    assert model_bench.crossover({1: 2.0}, {1: 1.0})["measured"] is None


def test_model_benchmark_quick_writes_csv_plot_and_marks_skips(tmp_path, capsys):
    out = tmp_path / "bench"
    # 2048 tokens of explicit attention need ~67 MB of score matrices: over a 0.05 GB cap.
    rc = bench_main(["model", "--models", *TEST_MODELS, "--tokens", "32", "64", "2048", "--quick",
                     "--max-memory-gb", "0.05", "--out", str(out)])
    assert rc == 0
    columns, rows = read_csv(out / "model_bench.csv")
    assert columns == model_bench.COLUMNS
    assert sorted((r["model"], int(r["tokens_requested"])) for r in rows) == sorted(
        (m, t) for m in TEST_MODELS for t in (32, 64, 2048))
    for r in rows:
        if r["model"] == "ssast_test_patch:explicit" and r["tokens_requested"] == "2048":
            assert r["status"] == "skipped" and "max-memory-gb" in r["reason"]
            assert r["time_s"] == ""
        else:
            assert r["status"] == "ok", r
            assert math.isfinite(float(r["time_s"])) and int(r["runs"]) == 1
            assert float(r["peak_extra_mb"]) >= 0 and float(r["peak_mb"]) > 0
            assert int(r["tokens"]) == int(r["tokens_requested"])
            assert int(r["frames"]) == 2 * int(r["tokens"])
    png = (out / "model_bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reference_model"] == "ssamba_test"
    assert set(summary["slopes"]) == set(TEST_MODELS)
    assert [e["tokens"] for e in summary["ratios"]["ssast_test_patch:explicit"]] == [32, 64]
    printed = capsys.readouterr().out
    assert "skipped: estimated" in printed and "log-log slopes" in printed and "crossover" in printed


@pytest.mark.slow
def test_failed_and_timed_out_configurations_are_marked(tmp_path):
    # "cuda" scan backend on CPU tensors: the child raises; a 0.01 s timeout kills the other.
    rc = bench_main(["model", "--models", "ssamba_test:cuda", "--tokens", "32", "64", "--quick",
                     "--out", str(tmp_path / "a")])
    assert rc == 0
    _, rows = read_csv(tmp_path / "a" / "model_bench.csv")
    assert [r["status"] for r in rows] == ["error", "skipped"]
    assert "cuda" in rows[0]["reason"] and "after error at 32 tokens" in rows[1]["reason"]

    rc = bench_main(["model", "--models", "ssast_test_patch", "--tokens", "32", "64", "--quick",
                     "--timeout", "0.01", "--out", str(tmp_path / "b")])
    assert rc == 0
    _, rows = read_csv(tmp_path / "b" / "model_bench.csv")
    assert [r["status"] for r in rows] == ["timeout", "skipped"]
    assert (tmp_path / "b" / "model_bench.png").exists()


def test_unknown_model_spec_is_an_error(capsys):
    assert bench_main(["model", "--models", "ssast_test_patch:flash", "--out", "unused"]) == 2
    assert "flash" in capsys.readouterr().err


@pytest.mark.slow
def test_train_benchmark_smoke(tmp_path, capsys):
    rc = bench_main(["train", "--models", "ssamba_test", "ssast_test_patch", "--frames", "100",
                     "--batch-size", "1", "--warmup", "0", "--repeats", "1", "--out", str(tmp_path)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "ratio ssamba_test / ssast_test_patch at 1 s" in printed
    _, rows = read_csv(tmp_path / "train_bench.csv")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert all(r["frames"] == "112" for r in rows)  # 100 frames padded to whole 16-frame patches


def test_train_benchmark_under_load(tmp_path, capsys):
    from ssamba.benchmarks.common import background_load

    with background_load(settle_s=0.0) as proc:
        assert proc.poll() is None  # running while the block runs
    assert proc.poll() is not None  # and stopped after it
    rc = bench_main(["train", "--models", "ssast_test_patch", "--frames", "100", "--batch-size", "1",
                     "--warmup", "0", "--repeats", "1", "--under-load", "--out", str(tmp_path)])
    assert rc == 0
    assert "slowdown ssast_test_patch at 1 s" in capsys.readouterr().out
    _, rows = read_csv(tmp_path / "train_bench.csv")
    assert float(rows[0]["loaded_time_s"]) > 0 and float(rows[0]["slowdown"]) > 0


@pytest.mark.slow
def test_embed_benchmark_under_load(capsys):
    rc = bench_main(["embed", "--files", "3", "--checkpoint", "ssamba_test", "--under-load"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "quiet: " in printed and "under load: " in printed
    slowdown = float(printed.split("slowdown ssamba embed: ")[1].split("x")[0])
    assert slowdown > 0
    # the run beside the load saw it and chose to sleep its threads (ssamba.threads)
    assert "under load: " in printed and "(OpenMP wait policy passive)" in printed.split("under load: ")[1]


def test_scan_benchmark_smoke(capsys):
    from ssamba.ops import scan_cpu

    if scan_cpu.load_library() is None:
        pytest.skip("CPU scan kernel unavailable")
    rc = bench_main(["scan", "--lengths", "64", "--backward-length", "64", "--repeats", "1",
                     "--ref-repeats", "1", "--bound-repeats", "1", "--no-memory"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "x the bound" in printed and "cpu vs best pure-PyTorch path" in printed


def test_worker_counts_a_warmup_over_the_budget_as_one_cold_run():
    from ssamba.benchmarks._worker import run_job

    job = {"mode": "forward", "preset": "ssast_test_patch", "frames": 64, "batch": 1, "warmup": 1,
           "repeats": 3}
    res = run_job(dict(job, time_budget=0.0))  # any call exceeds a zero budget
    assert (res["runs"], res["warmup_runs"], res["cold"]) == (1, 0, True)
    res = run_job(dict(job, time_budget=1e9))
    assert (res["runs"], res["warmup_runs"], res["cold"]) == (3, 1, False)
    assert res["tokens"] == 32 and res["seq_len"] == 34 and res["peak_extra_bytes"] >= 0


@pytest.mark.slow
def test_onnx_benchmark_smoke(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    rc = bench_main(["onnx", "--models", "ssast_test_patch", "--frames", "48", "96", "--repeats", "1",
                     "--out", str(tmp_path)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "onnxruntime (CPU) vs PyTorch eager" in printed and "ort / torch" in printed
    _, rows = read_csv(tmp_path / "onnx_bench.csv")
    assert [(r["model"], r["frames"]) for r in rows] == [("ssast_test_patch", "48"), ("ssast_test_patch", "96")]
    assert all(float(r["max_rel_diff"]) < 1e-4 and float(r["ratio"]) > 0 for r in rows)


def test_needle_haystack_differs_only_in_the_chirp_and_reach_is_measured_beyond_it(tmp_path):
    import numpy as np
    import soundfile

    from ssamba.benchmarks.long_audio import NEEDLE_S, reach_seconds, write_haystack

    start = write_haystack(tmp_path / "a.flac", 0.5)
    assert write_haystack(tmp_path / "b.flac", 0.5, needle=True) == start == 14.5
    a, rate = soundfile.read(tmp_path / "a.flac")
    b, _ = soundfile.read(tmp_path / "b.flac")
    changed = np.nonzero(a != b)[0] / rate
    assert a.shape == b.shape == (30 * 16000,) and start <= changed.min() and changed.max() < start + NEEDLE_S
    # embeddings that move 2 s before the chirp and 3 s after it: reach 3 s
    times = np.arange(0, 30, 0.5)
    emb = np.ones((times.size, 4))
    moved = emb.copy()
    moved[(times >= start - 2) & (times <= start + NEEDLE_S + 3)] += 0.01
    for name, value in (("plain", emb), ("needle", moved)):
        np.savez(tmp_path / f"{name}.npz", timestamp_embeddings=value, timestamps_ms=times * 1000)
    assert reach_seconds(tmp_path / "plain.npz", tmp_path / "needle.npz", start) == 3.0
    assert reach_seconds(tmp_path / "plain.npz", tmp_path / "plain.npz", start) == 0.0
    # the detector's rank: timestamps outside the chirp that score above its best one
    from ssamba.benchmarks.long_audio import needle_rank

    # a score peaking at 16.5 s, after the chirp (14.5-15.5 s): its best inside is 15.0 s (-1.5),
    # and 15.5, 16, 16.5, 17, 17.5 s score above it
    assert needle_rank(lambda e: -np.abs(times - 16.5), tmp_path / "plain.npz", start) == 5
    assert needle_rank(lambda e: -np.abs(times - start - 0.5), tmp_path / "plain.npz", start) == 0


@pytest.mark.slow
def test_long_audio_benchmark_smoke(tmp_path, capsys):
    rc = bench_main(["long", "--minutes", "0.25", "--models", "ssamba_test", "--modes", "windows",
                     "--needle", "--out", str(tmp_path)])
    assert rc == 0
    _, rows = read_csv(tmp_path / "long_audio.csv")
    assert [(r["mode"], r["status"]) for r in rows] == [("windows", "ok")]
    assert float(rows[0]["peak_mb"]) > 100 and float(rows[0]["seconds"]) > 0
    # ssamba_test's windows are 64 frames (0.64 s): the chirp cannot move embeddings further
    # than one window beyond its own span
    assert 0 <= float(rows[0]["reach_s"]) <= 0.64
    assert int(rows[0]["needle_rank"]) >= 0  # the detector scored the file
    printed = capsys.readouterr().out
    assert "reach s" in printed and "detector rank" in printed


def test_bench_scan_times_another_targets_build_beside_this_one():
    from ssamba.benchmarks.scan import compare_builds
    from ssamba.ops import build

    other = "x86-64" if build.runnable_here("x86-64") is None else "armv8"
    lines = compare_builds(other, 70, 1, 1)
    header, rows = lines[0], lines[1:5]
    assert other in header and "lanes" in header
    assert [r.split("  ")[0] for r in rows] == ["forward", "forward + backward", "kernel C call", "bound"]
    assert all(float(r.split()[-1].rstrip("x")) > 0 for r in rows)  # each row ends in a ratio
    assert any("of its own bound" in ln for ln in lines[5:])
