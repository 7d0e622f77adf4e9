"""Every shipped recipe validates; each command explains itself; the CLI runs end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ssamba.cli import main
from ssamba.training.experiment import load_experiment

from .synth import make_labels, make_set

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "configs").glob("*.yaml"))


def test_there_are_recipes_for_the_paper():
    names = {p.stem for p in RECIPES}
    for needed in ("pretrain_ssamba_tiny", "pretrain_ssamba_small", "pretrain_ssamba_base", "finetune_as20k",
                   "finetune_esc50", "finetune_speechcommands_v1", "finetune_speechcommands_v2",
                   "finetune_voxceleb1", "finetune_iemocap", "cpu_pretrain_tiny"):
        assert needed in names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_validates_and_says_how_to_launch(recipe):
    config = load_experiment(recipe)
    first_lines = recipe.read_text().splitlines()[:12]
    assert first_lines[0].startswith("#")
    assert any(f"ssamba {config.task}" in line and recipe.name in line for line in first_lines)


@pytest.mark.parametrize("command", ["models", "fbank", "pretrain", "finetune", "evaluate", "stats"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: ssamba {command}" in out
    if command in ("pretrain", "finetune"):
        own = "objective.num_masked" if command == "pretrain" else "finetune.loss"
        assert "optim.lr" in out and own in out and "run.out_dir" in out


def test_bad_override_is_reported(capsys):
    assert main(["pretrain", "optim.learnrate=1"]) == 2
    assert "learnrate" in capsys.readouterr().err


def test_pretrain_then_finetune_then_evaluate_from_the_command_line(tmp_path):
    train = make_set(tmp_path, 4, 0, "train")
    valid = make_set(tmp_path, 2, 1, "valid")
    labels = make_labels(tmp_path)
    common = ["model.preset=ssamba_test", "frontend.target_length=64", "data.num_workers=0",
              "run.batch_size=4", "run.progress=false", f"data.train={train}"]

    def ssamba(*args):
        return subprocess.run([sys.executable, "-m", "ssamba.cli", *args], capture_output=True, text=True,
                              cwd=tmp_path, timeout=300)

    pre = ssamba("pretrain", *common, "objective.num_masked=8", "run.epochs=1", "run.steps_per_epoch=2",
                 f"run.out_dir={tmp_path / 'pre'}")
    assert pre.returncode == 0, pre.stderr
    assert (tmp_path / "pre" / "final" / "config.json").is_file()

    fine = ssamba("finetune", *common, "model.options={patch_stride: [10, 10]}", f"model.init_from={tmp_path / 'pre'}",
                  f"data.valid={valid}", f"data.label_csv={labels}", "run.epochs=1", "run.max_steps=2",
                  f"run.out_dir={tmp_path / 'fine'}")
    assert fine.returncode == 0, fine.stderr
    summary = json.loads((tmp_path / "fine" / "summary.json").read_text())
    assert summary["steps"] == 2 and "resampled: pos_embed" in summary["init"]

    scored = ssamba("evaluate", str(tmp_path / "fine"), str(valid), str(labels))
    assert scored.returncode == 0, scored.stderr
    result = json.loads(scored.stdout)
    assert set(result) == {"acc", "mAP", "AUC", "d_prime", "clips", "scored", "skipped"}
    assert result["skipped"] == [] and result["scored"] == result["clips"] > 0

    # a clip that is gone is named in the result, and the rest are scored
    content = json.loads(Path(valid).read_text())
    content["data"].append({**content["data"][0], "wav": str(tmp_path / "gone.wav")})
    holed = tmp_path / "holed.json"
    holed.write_text(json.dumps(content))
    scored = ssamba("evaluate", str(tmp_path / "fine"), str(holed), str(labels))
    result = json.loads(scored.stdout)
    assert scored.returncode == 0 and result["scored"] == result["clips"] - 1
    assert len(result["skipped"]) == 1 and "gone.wav" in result["skipped"][0]

    # init_from a model of another family, or with another width: refused before training
    for options, expected in ((["model.preset=ssast_test_patch"], "is a SSAMBAConfig model but model.preset"),
                              (["model.options={embed_dim: 64}"], "do not fit this model")):
        wrong = ssamba("finetune", *common, *options, f"model.init_from={tmp_path / 'pre'}",
                       f"data.label_csv={labels}", "run.epochs=1", "run.max_steps=1",
                       f"run.out_dir={tmp_path / 'wrong'}")
        assert wrong.returncode == 2 and expected in wrong.stderr, wrong.stderr
        assert not (tmp_path / "wrong" / "final").exists()

    stats = ssamba("stats", str(train))
    assert stats.returncode == 0 and "frontend.mean=" in stats.stdout
