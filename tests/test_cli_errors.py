"""The command line's error boundary and the typed config (issue 15).

Every user error of the issue's list ends in exactly one ``ssamba: error:`` line and exit
status 2 (no traceback); ``--debug`` / ``SSAMBA_DEBUG=1`` shows the traceback; a bug keeps
its traceback. Config values are coerced to their declared types and range-checked before
anything runs, so the inputs that used to hang fail at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

import ssamba
from ssamba.cli import main
from ssamba.config import ConfigError
from ssamba.training.experiment import load_experiment, parse_overrides

from .conftest import save_test_model
from .training.synth import make_labels, make_set

TINY = ["model.preset=ssamba_test", "frontend.target_length=64", "model.options={input_tdim: 64}",
        "data.num_workers=0", "run.epochs=1", "run.max_steps=1", "run.batch_size=2", "run.progress=false"]


def user_error(capsys, argv: list[str]) -> str:
    """Run ``ssamba argv``; assert it is one ``ssamba: error:`` line and exit 2; return the message."""
    rc = main(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("ssamba: error: ")]
    assert rc == 2, (rc, captured.err)
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0].removeprefix("ssamba: error: ")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    train = make_set(root, 2, 0, "train")
    labels = make_labels(root)
    bad_label = root / "bad_label.json"
    content = json.loads(train.read_text())
    content["data"][0]["labels"] = "nonexistent"
    bad_label.write_text(json.dumps(content))
    dup = root / "dup.csv"
    dup.write_text("index,mid,display_name\n0,a,A\n0,b,B\n")
    (root / "malformed.json").write_text("{not json")
    (root / "shards").mkdir()
    return {"root": root, "train": train, "labels": labels, "bad_label": bad_label, "dup": dup}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_test_model(tmp_path_factory.mktemp("model"), input_tdim=64)


def test_the_issues_tracebacks_are_one_line_errors(capsys, data, tmp_path):
    d = data
    ft = ["finetune", f"data.train={d['train']}", f"data.label_csv={d['labels']}", f"run.out_dir={tmp_path / 'r'}", *TINY]
    cases = [
        (["pretrain", f"run.out_dir={tmp_path / 'x'}"], "needs data.train"),
        (["pretrain", str(tmp_path / "missing.yaml")], "not found"),
        (["stats", str(tmp_path / "missing.json")], "does not exist"),
        (["stats", str(d["root"] / "malformed.json")], "not valid JSON"),
        ([*ft, f"data.train={d['bad_label']}"], "unknown label 'nonexistent'"),
        ([*ft, f"data.label_csv={d['dup']}"], "index 0 appears twice"),
        ([*ft, "run.device=quantum"], "run.device 'quantum' is not a device"),
        ([*ft, "finetune.loss=hinge"], "config.finetune.loss: Input should be 'ce' or 'bce' (got 'hinge')"),
        (["pretrain", f"data.train={d['root'] / 'shards'}", f"run.out_dir={tmp_path / 's'}", *TINY], "no shards"),
        (["models", "resnet*"], "no preset matches"),
        (["fbank", str(tmp_path / "nowhere.wav")], "cannot read audio file"),
        (["evaluate", str(tmp_path), str(d["train"]), str(d["labels"])], "not an ssamba model directory"),
        (["embed", str(tmp_path / "nothing"), "--checkpoint", "ssamba_test", "--out", str(tmp_path / "e")], "does not exist"),
    ]
    for argv, expected in cases:
        message = user_error(capsys, argv)
        assert expected in message, (argv, message)


@pytest.mark.parametrize("override,expected", [
    ("run.batch_size=-1", "config.run.batch_size: Input should be greater than or equal to 1 (got -1)"),
    ("run.batch_size=abc", "config.run.batch_size: Input should be a valid integer, unable to parse string as an integer (got 'abc')"),
    ("run.batch_size=8.5", "config.run.batch_size: Input should be a valid integer, got a number with a fractional part (got 8.5)"),
    ("optim.grad_accum=0", "config.optim.grad_accum: Input should be greater than or equal to 1 (got 0)"),
    ("data.max_bad_fraction=1.0", "config.data.max_bad_fraction: Input should be less than 1 (got 1.0)"),
    ("run.save_every=0", "config.run.save_every: Input should be greater than or equal to 1"),
    ("run.log_every=0", "config.run.log_every: Input should be greater than or equal to 1"),
    ("run.epochs=-1", "config.run.epochs: Input should be greater than or equal to 1 (got -1)"),
    ("objective.masking=blocks", "config.objective.masking: Input should be 'official', 'cluster', 'random' or 'auto'"),
    ("optim.lr=abc", "config.optim.lr: Input should be a valid number"),
])
def test_bad_values_fail_before_the_run_starts(capsys, data, tmp_path, override, expected):
    # each of these used to hang at 100% CPU or fail deep inside the run
    argv = ["pretrain", f"data.train={data['train']}", f"run.out_dir={tmp_path / 'r'}", *TINY, override]
    assert expected in user_error(capsys, argv)
    assert not (tmp_path / "r").exists()  # nothing started


def test_values_are_coerced_to_their_declared_types():
    # YAML 1.1 reads 3e-4 as a string; the config makes it the float it declares
    overrides = parse_overrides(["optim.lr=3e-4", "run.batch_size=8", "model.options={patch_stride: [10, 10]}",
                                 "objective.cluster_sizes=[3, 4]"])
    assert overrides["optim.lr"] == "3e-4"
    config = load_experiment(None, overrides)
    assert config.optim.lr == pytest.approx(3e-4) and isinstance(config.optim.lr, float)
    assert config.run.batch_size == 8 and config.objective.cluster_sizes == (3, 4)
    with pytest.raises(TypeError, match=r"unknown config.optim option\(s\) \['learning_rate'\]; valid options: \[.*'lr'"):
        load_experiment(None, {"optim.learning_rate": 1e-3})


def test_python_built_configs_are_checked_too(tmp_path, data):
    from dataclasses import replace

    from ssamba.training.run import pretrain

    config = load_experiment(None, {"data.train": str(data["train"]), "run.out_dir": str(tmp_path / "r")})
    with pytest.raises(ConfigError, match="config.run.batch_size: Input should be greater than or equal to 1"):
        pretrain(replace(config, run=replace(config.run, batch_size=-1)))
    with pytest.raises(ConfigError, match="ssamba_test.embed_dim"):
        ssamba.create_model("ssamba_test", embed_dim=0)


def test_debug_shows_the_traceback(capsys, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError):
        main(["--debug", "pretrain", str(tmp_path / "missing.yaml")])
    with pytest.raises(FileNotFoundError):
        main(["pretrain", str(tmp_path / "missing.yaml"), "--debug"])  # anywhere on the line
    monkeypatch.setenv("SSAMBA_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["pretrain", str(tmp_path / "missing.yaml")])


def test_a_bug_keeps_its_traceback(monkeypatch):
    import ssamba.cli as cli

    def broken(args):
        raise RuntimeError("an internal bug")

    monkeypatch.setattr(cli, "cmd_models", broken)
    with pytest.raises(RuntimeError, match="an internal bug"):
        main(["models"])


def test_a_closed_pipe_is_not_an_error():
    # `ssamba models | head -1`: the reader leaves before ssamba writes
    proc = subprocess.Popen([sys.executable, "-m", "ssamba.cli", "models"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()


def test_model_directories_are_checked_against_the_weights_header(capsys, model_dir, tmp_path, data):
    import shutil

    def variant(name: str, edit) -> Path:
        target = tmp_path / name
        shutil.copytree(model_dir, target)
        edit(target)
        return target

    def set_config(key, value):
        def edit(target):
            meta = json.loads((target / "config.json").read_text())
            meta["config"][key] = value
            (target / "config.json").write_text(json.dumps(meta))
        return edit

    huge = variant("huge", set_config("embed_dim", 10_000_000))  # used to allocate 12-15 GB first
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ConfigError, match=r"embed_dim: Input should be less than or equal to 65536 \(got 10000000\)"):
        ssamba.load_model(huge)
    wide = variant("wide", set_config("embed_dim", 4096))  # a valid size, but not these weights'
    with pytest.raises(ValueError, match=r"config.json does not describe these weights: .*shape mismatch"):
        ssamba.load_model(wide)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 512 * 1024  # KiB: under 0.5 GB more

    no_family = variant("no_family", lambda t: (t / "config.json").write_text(json.dumps(
        {k: v for k, v in json.loads((model_dir / "config.json").read_text()).items() if k != "family"})))
    with pytest.raises(ValueError, match="'family' must be a str"):
        ssamba.load_model(no_family)
    corrupt = variant("corrupt", lambda t: (t / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage"))
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        ssamba.load_model(corrupt)
    depth = variant("depth", set_config("depth", ssamba.get_config("ssamba_test").depth + 2))
    with pytest.raises(ValueError, match="unexpected tensor|missing"):
        ssamba.load_model(depth)
    negative = variant("negative", set_config("embed_dim", -3))
    with pytest.raises(ConfigError, match="embed_dim: Input should be greater than or equal to 1"):
        ssamba.load_model(negative)
    for directory in (huge, no_family, corrupt):  # and the CLI says so in one line
        assert "model" in user_error(capsys, ["evaluate", str(directory), str(data["train"]), str(data["labels"])])


def test_stats_refuses_silence(capsys, tmp_path):
    from ssamba.data import ClipEntry, write_manifest

    path = tmp_path / "silence.wav"
    soundfile.write(path, np.zeros(16000, np.float32), 16000)
    write_manifest([ClipEntry(str(path))], tmp_path / "m.json")
    assert "std 0" in user_error(capsys, ["stats", str(tmp_path / "m.json")])


def test_truncated_wav_is_read_with_a_warning(tmp_path, caplog):
    from ssamba.frontend import load_audio

    full = tmp_path / "full.wav"
    soundfile.write(full, (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000,
                    subtype="PCM_16")
    raw = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(raw[: len(raw) // 2])
    with caplog.at_level("WARNING", logger="ssamba.frontend.audio"):
        assert load_audio(full).numel() == 16000
        assert not caplog.records
        assert load_audio(cut).numel() < 8000
    assert "cut.wav is truncated" in caplog.text


@pytest.mark.slow
def test_cli_errors_in_a_real_process(tmp_path):
    env = {**os.environ}
    env.pop("SSAMBA_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "ssamba.cli", "finetune", "finetune.loss=hinge", "data.train=x.json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "ssamba: error: config.finetune.loss: Input should be 'ce' or 'bce' (got 'hinge')"]


# -- campaign 3 (issue 34), class 6: the last tracebacks -------------------------------------

@pytest.mark.parametrize("override,expected", [
    ("optim.lr=inf", "config.optim.lr: must be a finite number (got inf)"),
    ("objective.mse_weight=inf", "config.objective.mse_weight: must be a finite number (got inf)"),
    ("frontend.mean=nan", "config.frontend.mean: must be a finite number (got nan)"),
    ("frontend.preemphasis=1e30", "config.frontend.preemphasis: Input should be less than or equal to 1"),
    ("optim.betas=[0.9, .nan]", "config.optim.betas.1: Input should be less than 1 (got nan)"),
    ("task.x=1", "cannot set 'task.x': 'task' is not a section"),
])
def test_non_finite_and_misplaced_values_are_refused(capsys, data, tmp_path, override, expected):
    argv = ["pretrain", f"data.train={data['train']}", f"run.out_dir={tmp_path / 'r'}", *TINY, override]
    assert expected in user_error(capsys, argv)
    assert not (tmp_path / "r").exists()


def test_campaign_3_tracebacks_are_one_line_errors(capsys, data, tmp_path, model_dir, monkeypatch):
    recipe = tmp_path / "list.yaml"
    recipe.write_text("- a\n- b\n")
    int_labels = tmp_path / "int_labels.json"
    content = json.loads(data["train"].read_text())
    content["data"][0]["labels"] = 3
    int_labels.write_text(json.dumps(content))
    deep = tmp_path / "deep.json"
    deep.write_text('{"data": ' + "[" * 100_000 + "]" * 100_000 + "}")
    deep_model = tmp_path / "deep_model"
    deep_model.mkdir()
    (deep_model / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    (deep_model / "config.json").write_text('{"config": ' + "[" * 100_000 + "]" * 100_000 + "}")
    wav = next(Path(e["wav"]) if Path(e["wav"]).is_absolute() else data["train"].parent / e["wav"]
               for e in content["data"])
    ft = ["finetune", f"data.label_csv={data['labels']}", f"run.out_dir={tmp_path / 'r'}", *TINY]
    cases = [
        (["pretrain", "run=5", f"run.out_dir={tmp_path / 'x'}"], "'run' is not a section"),
        (["pretrain", str(recipe)], "a recipe is a mapping of sections, got list"),
        ([*ft, f"data.train={int_labels}"], "labels must be a comma-separated string of ids or a list of them, got 3"),
        (["stats", str(deep)], "nests its JSON too deeply to read"),
        (["embed", str(wav), "--checkpoint", str(deep_model), "--out", str(tmp_path / "e0")], "too deeply"),
        (["embed", str(wav), "--checkpoint", str(model_dir), "--out", str(tmp_path / "e1"), "--layer", "999"],
         "layer 999 is out of range: this model has 4 hidden states"),
        (["pretrain", f"data.train={data['train']}", f"run.out_dir={tmp_path / 'c'}", *TINY, "run.device=cuda:99"],
         "device 'cuda:99' asked for"),
    ]
    for argv, expected in cases:
        message = user_error(capsys, argv)
        assert expected in message, (argv, message)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    message = user_error(capsys, ["pretrain", f"data.train={data['train']}", f"run.out_dir={tmp_path / 'w'}", *TINY])
    assert "WORLD_SIZE=2 needs RANK set to 0..1" in message


def test_an_unavailable_scan_backend_is_one_line(capsys, data, tmp_path, model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    config["config"]["scan_backend"] = "cuda"
    cuda_model = tmp_path / "cuda_model"
    cuda_model.mkdir()
    (cuda_model / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    (cuda_model / "config.json").write_text(json.dumps(config))
    wav = tmp_path / "a.wav"
    soundfile.write(wav, np.zeros(16000, dtype="float32") + 0.01, 16000)
    message = user_error(capsys, ["embed", str(wav), "--checkpoint", str(cuda_model), "--out", str(tmp_path / "e")])
    assert "scan backend 'cuda' is unavailable" in message


@pytest.mark.parametrize("argv,expected", [
    (["bench", "scan", "--lengths", "0"], "argument --lengths: must be at least 1, got 0"),
    (["bench", "scan", "--lengths", "-5"], "argument --lengths: must be at least 1, got -5"),
    (["bench", "long", "--minutes", "-1"], "argument --minutes: must be above 0, got -1"),
    (["bench", "model", "--timeout", "nan"], "argument --timeout: must be a finite number"),
])
def test_benchmark_arguments_are_checked_by_the_parser(capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_a_model_larger_than_the_memory_left_is_refused_before_allocating(capsys, model_dir, monkeypatch):
    from ssamba.models import serialization

    assert ssamba.load_model(model_dir) is not None
    monkeypatch.setattr(serialization, "available_memory_bytes", lambda: 1024)
    with pytest.raises(ValueError, match=r"needs about .* GiB .*more than the 0.0 GiB available here"):
        ssamba.load_model(model_dir)
    monkeypatch.undo()
    assert serialization.available_memory_bytes() > 0  # this machine's MemAvailable is read


def test_a_diverging_run_is_one_line_that_does_not_blame_the_data(capsys, data, tmp_path):
    argv = ["pretrain", f"data.train={data['train']}", f"run.out_dir={tmp_path / 'r'}", *TINY, "run.max_steps=6",
            "run.epochs=1", "optim.lr=1e30", "optim.warmup_steps=0", "objective.num_masked=8"]
    message = user_error(capsys, argv)
    assert "the run diverged" in message and "lower optim.lr" in message


def test_the_model_comes_first_in_embed_and_explain_and_the_old_spelling_still_works(capsys, model_dir, tmp_path):
    wav = tmp_path / "a.wav"
    soundfile.write(wav, 0.1 * np.sin(np.arange(16000) / 5.0), 16000)
    assert main(["embed", str(model_dir), str(wav), "--out", str(tmp_path / "new"), "--no-progress"]) == 0
    assert main(["embed", str(wav), "--checkpoint", str(model_dir), "--out", str(tmp_path / "old"),
                 "--no-progress"]) == 0
    assert np.array_equal(np.load(tmp_path / "new" / "a.npz")["scene"], np.load(tmp_path / "old" / "a.npz")["scene"])
    assert "give the model first" in user_error(capsys, ["embed", str(model_dir), "--out", str(tmp_path / "x")])
    assert "one audio file at a time" in user_error(
        capsys, ["explain", str(model_dir), str(wav), str(wav), "--out", str(tmp_path / "y")])
    for command in ("embed", "explain"):
        main_help = subprocess.run([sys.executable, "-m", "ssamba.cli", command, "--help"], capture_output=True,
                                   text=True).stdout
        assert f"usage: ssamba {command} MODEL" in main_help and "--checkpoint" not in main_help


def test_each_training_command_lists_only_its_own_options():
    pretrain = subprocess.run([sys.executable, "-m", "ssamba.cli", "pretrain", "--help"], capture_output=True,
                              text=True).stdout
    finetune = subprocess.run([sys.executable, "-m", "ssamba.cli", "finetune", "--help"], capture_output=True,
                              text=True).stdout
    assert "objective.num_masked" in pretrain and "finetune.loss" not in pretrain
    assert "finetune.loss" in finetune and "objective.num_masked" not in finetune
    for text in (pretrain, finetune):
        table = text.split("options (set in the YAML recipe")[1]
        rows = [line.split() for line in table.splitlines() if line.startswith("  ") and "." in line.split()[0]]
        assert rows and all(len(row) >= 3 for row in rows), [r for r in rows if len(r) < 3]  # every option has help
