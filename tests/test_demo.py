"""The demo end to end: ``ssamba demo --quick``, and a second run with the same seed
that repeats part of it (one task, one default family beside the optional MambaOut)
and gets the same numbers for that part."""

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


def _demo(out, cache, *options):
    command = [sys.executable, "-m", "ssamba.cli", "demo", "--quick", "--seed", "0", "--out", str(out),
               "--cache", str(cache), *options]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return [(root / "a", *_demo(root / "a", root / "cache")),
            (root / "b", *_demo(root / "b", root / "cache", "--families", "mambaout,ssamba", "--tasks", "kws"))]


def test_same_seed_same_results_for_what_both_runs_ran(two_runs):
    # the second run pretrains MambaOut before SSAMBA and runs kws only: SSAMBA's
    # pretraining, its kws probes, gain curve and fine-tuning runs, and the log-mel
    # probes must be the first run's, number for number
    first, second = _without_timings(two_runs[0][2]), _without_timings(two_runs[1][2])
    assert second["settings"]["families"] == ["mambaout", "ssamba"] and second["settings"]["tasks"] == ["kws"]
    assert second["pretraining"]["ssamba"] == first["pretraining"]["ssamba"]
    kws_first, kws_second = first["probes"]["kws"], second["probes"]["kws"]
    for name in ("log-mel", "ssamba pretrained", "ssamba random init"):
        assert kws_second[name] == kws_first[name], name
    assert second["probe_gain_by_step"]["kws"]["ssamba"] == first["probe_gain_by_step"]["kws"]["ssamba"]
    ssamba_kws = [r for r in first["finetuning"] if r["task"] == "kws" and r["model"] == "ssamba"]
    assert [r for r in second["finetuning"] if r["model"] == "ssamba"] == ssamba_kws
    assert set(second["probes"]) == {"kws"} and "ssast pretrained" not in kws_second
    assert two_runs[0][2]["seconds"]["total"] > 0  # wall time is measured, beside the results


def test_mambaout_runs_the_same_recipes(two_runs):
    out, done, results = two_runs[1]
    assert results["pretraining"]["mambaout"]["steps"] == results["settings"]["pretrain_steps"]
    runs = [r for r in results["finetuning"] if r["model"] == "mambaout"]
    assert sorted((r["init"], r["seed"]) for r in runs) == [(i, s) for i in ("pretrained", "scratch") for s in (0, 1, 2)]
    assert all(0 <= r["test"] <= 1 for r in results["probes"]["kws"]["mambaout pretrained"])
    assert "MambaOut" in done.stdout or "mambaout" in done.stdout
    meta = json.loads((out / "pretrain_mambaout" / "final" / "config.json").read_text())
    assert meta["family"] == "mambaout"


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
            last = results["long"].get(family, {}).get("steps", results["settings"]["pretrain_steps"])
            assert steps[0] == 0 and results["settings"]["pretrain_steps"] in steps and steps[-1] == last
            assert steps == sorted(steps)  # ends with the shipped long-pretrained encoder, where there is one
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


def test_pool_holds_the_real_recordings_found_here(two_runs):
    from ssamba.corpora.recordings import CATALOGUE, source_files
    from ssamba.data import read_manifest

    out, done, results = two_runs[0]
    if not any(source_files(s) for s in CATALOGUE):  # no Debian packages here: said in one line
        assert results["pool"] == {"name": "synthetic", "recorded": []}
        assert done.stdout.count("no real recordings found") == 1
        return
    assert results["pool"]["name"] == "synthetic+recorded"
    kinds = {row["kind"] for row in results["pool"]["recorded"]}
    assert kinds == {"speech", "music", "effects"} and "h of real recordings" in done.stdout
    train = read_manifest(out / "manifests" / "pool-train.json")
    recorded = [e for e in train if "recorded-quick-seed0" in e.wav]
    assert recorded and len(recorded) < len(train)  # both the synthetic and the real clips
    assert len(recorded) == sum(row["train"] for row in results["pool"]["recorded"])


def test_long_pretrained_rows_where_an_encoder_is_shipped(two_runs):
    from ssamba.models.shipped import shipped_names

    out, done, results = two_runs[0]
    for family in ("ssamba", "ssast"):
        if f"{family}-demo" not in shipped_names():
            assert family not in results["long"] and f"({family}-demo)" in done.stdout
            assert f"{family} long" not in results["probes"]["kws"]
            continue
        assert results["long"][family]["steps"] > results["settings"]["pretrain_steps"]
        for task in ("kws", "speaker", "sounds"):
            assert len(results["probes"][task][f"{family} long"]) == 3
            assert results["probe_gain_by_step"][task][family][-1][0] == results["long"][family]["steps"]
            runs = [r for r in results["finetuning"] if (r["task"], r["model"], r["init"]) == (task, family, "long")]
            assert sorted(r["seed"] for r in runs) == results["seeds"]
        assert f"{family} long" in results["tables"]["probes"] and f"{family} long" in results["tables"]["finetuning"]
