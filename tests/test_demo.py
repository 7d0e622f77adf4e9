"""The demo end to end: ``ssamba demo --quick`` twice with one seed gives the same results."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # runs the demo's smoke run


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _demo(out, cache):
    command = [sys.executable, "-m", "ssamba.cli", "demo", "--quick", "--seed", "0", "--out", str(out),
               "--cache", str(cache)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return [(root / name, *_demo(root / name, root / "cache")) for name in ("a", "b")]


def test_same_seed_same_results(two_runs):
    (_, _, first), (_, _, second) = two_runs
    assert _without_timings(first) == _without_timings(second)
    assert first["seconds"]["total"] > 0  # wall time is measured, beside the results


def test_results_cover_every_task_representation_and_seed(two_runs):
    out, done, results = two_runs[0]
    seeds = results["seeds"]
    assert seeds == [0, 1, 2]
    for task in ("kws", "speaker", "sounds"):
        row = results["probes"][task]
        for name in ("log-mel", "ssamba pretrained", "ssamba random init", "ssast pretrained", "ssast random init"):
            assert len(row[name]) == 3 and all(0 <= r["test"] <= 1 for r in row[name])
        for family in ("ssamba", "ssast"):
            steps = [s for s, _ in results["probe_gain_by_step"][task][family]]
            assert steps[0] == 0 and steps[-1] == results["settings"]["pretrain_steps"] and steps == sorted(steps)
            for init in ("pretrained", "scratch"):
                runs = [r for r in results["finetuning"] if (r["task"], r["model"], r["init"]) == (task, family, init)]
                assert sorted(r["seed"] for r in runs) == seeds
                assert all(r["steps"] == results["settings"]["finetune_steps"] for r in runs)
    for family in ("ssamba", "ssast"):  # equal compute: the same steps at the same batch
        assert results["pretraining"][family]["steps"] == results["settings"]["pretrain_steps"]
    assert "+-" in done.stdout and "low-label fine-tuning" in done.stdout
    for plot in results["plots"]:
        assert (out / plot).stat().st_size > 10_000


def test_outputs_keep_models_not_optimiser_states_and_log_sparingly(two_runs):
    out, done, results = two_runs[0]
    assert not list(out.rglob("checkpoints")), "optimiser states are kept only with --keep-checkpoints"
    assert (out / "pretrain_ssamba" / "final" / "model.safetensors").is_file()
    assert all((out / r["run"] / "final" / "model.safetensors").is_file() for r in results["finetuning"])
    # not a terminal: no bar redraws, a few lines per run, each naming its run with a real total
    assert "\r" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if " step (" in line]
    assert len(lines) <= 2 * (2 + len(results["finetuning"]))
    total = results["settings"]["finetune_steps"]
    assert any(line.startswith("kws_ssamba_pretrained_seed0: ") and f"/{total} step" in line for line in lines)
