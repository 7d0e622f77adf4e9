"""scripts/gpu_check.py, every section at toy sizes on CPU (``--smoke``): the script a
GPU session runs once must not fail there for reasons a CPU can catch."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_section_and_writes_its_files(tmp_path):
    pytest.importorskip("espeakng_loader")
    from ssamba.corpora import build_suite

    suite = build_suite(tmp_path / "suite", seed=0, scale="mini", progress=False, workers=1)
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    out = tmp_path / "check"
    assert gpu_check.main(["--smoke", "--out", str(out), "--budget", "400", "--suite", str(suite.root)]) == 0

    summary = json.loads((out / "summary.json").read_text())
    for section in ("tests", "scan", "efficiency", "throughput", "pretraining"):
        assert not str(summary[section]).startswith(("skipped", "failed")), (section, summary[section])
    assert summary["tests"]["returncode"] == 0 and summary["efficiency"] == 0 and summary["throughput"] == 0
    assert summary["env"]["device"] == "cpu"
    with open(out / "scan.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["backend"] for r in rows} >= {"reference", "cpu"} and all(float(r["forward_ms"]) > 0 for r in rows)
    with open(out / "efficiency" / "model_bench.csv") as handle:
        assert {r["status"] for r in csv.DictReader(handle)} == {"ok"}
    with open(out / "train" / "train_bench.csv") as handle:
        assert [r["precision"] for r in csv.DictReader(handle)] == ["bf16", "bf16"]
    pretraining = summary["pretraining"]
    assert pretraining["steps"] == 8 and math.isfinite(pretraining["last_loss"])
    assert pretraining["last_loss"] < pretraining["first_loss"]


def test_gpu_check_without_a_gpu_is_one_error_line(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "gpu_check: error: no CUDA GPU is visible to PyTorch (--smoke runs the sections on CPU)"]
