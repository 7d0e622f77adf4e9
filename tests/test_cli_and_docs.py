"""The command line, the README example and the docstring examples."""

import csv
import doctest
import importlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import ssamba
from ssamba.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_models_lists_presets_with_parameter_counts(capsys):
    assert main(["models", "ssamba_*"]) == 0
    out = capsys.readouterr().out
    assert "ssamba_tiny" in out and "6.92M" in out and "96.70M" in out
    assert "ssast" not in out.split("\n\n")[0]


def test_models_with_no_match_fails(capsys):
    assert main(["models", "resnet*"]) == 2
    assert capsys.readouterr().err == "ssamba: error: no preset matches 'resnet*'; 'ssamba models' lists them all\n"


def test_fbank_command(tmp_path, capsys):
    path = tmp_path / "clip.wav"
    soundfile.write(path, 0.1 * np.random.default_rng(0).standard_normal((22050, 2)), 22050)
    out_file = tmp_path / "clip.npy"
    assert main(["fbank", str(path), "--target-length", "128", "--out", str(out_file)]) == 0
    assert np.load(out_file).shape == (128, 128)
    assert "98 frames" in capsys.readouterr().out  # 1 s resampled to 16 kHz
    assert main(["fbank", str(tmp_path / "missing.wav")]) == 2
    assert "missing.wav" in capsys.readouterr().err


def test_help_answers_without_importing_torch():
    code = (
        "import sys\n"
        "from ssamba.cli import main\n"
        "try:\n    main(['models', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "glob over preset names" in out.stdout
    assert out.stdout.strip().endswith("False")


def test_readme_python_example_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert tuple(scope["tokens"].shape) == (2, 145, 192)
    assert tuple(scope["logits"].shape) == (2, 35)


@pytest.mark.parametrize("module", ["ssamba", "ssamba.frontend.kaldi", "ssamba.frontend.logmel"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def _command_rows() -> list[str]:
    """The README's command table as the command line describes itself."""
    import argparse

    from ssamba.cli import build_parser

    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    rows = []
    for action in sub._choices_actions:
        text = " ".join(action.help.split())
        rows.append(f"| `ssamba {action.dest}` | {text[0].upper() + text[1:]} |")
    return rows


def test_readme_command_table_is_the_command_line():
    readme = (ROOT / "README.md").read_text()
    table = re.search(r"<!-- commands -->\n(.*?)<!-- /commands -->", readme, re.S).group(1)
    rows = [line for line in table.strip().splitlines()[2:]]
    assert rows == _command_rows(), "README command table out of date; it should read:\n" + "\n".join(_command_rows())
    assert len(rows) == 16


def test_layout_names_every_module():
    # the Layout section of docs/development.md
    development = (ROOT / "docs" / "development.md").read_text()
    layout = re.search(r"## Layout\n\n```\n(.*?)```", development, re.S).group(1)
    package = ROOT / "src" / "ssamba"
    missing = [str(p.relative_to(package)) for p in sorted(package.rglob("*.py"))
               if p.name != "__init__.py" and not re.search(rf"\b{re.escape(p.stem)}\.py\b", layout)]
    missing += [d.name + "/" for d in sorted(package.iterdir()) if d.is_dir() and (d / "__init__.py").exists()
                and not re.search(rf"^  {d.name}/", layout, re.M)]
    assert not missing, f"docs/development.md's layout does not name: {missing}"
    for top in ("configs/", "examples/", "lab/", "scripts/", "tests/"):
        assert re.search(rf"^{top}", layout, re.M), top
    for top in ("examples", "lab"):
        unnamed = [p.name for p in sorted((ROOT / top).glob("*.py")) if not re.search(rf"\b{p.name}\b", layout)]
        assert not unnamed, f"docs/development.md's layout does not name {top}/{unnamed}"


def _example(name, folder="examples"):
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # pretrains twice and probes
def test_long_pretrain_example_stages_resume_to_the_straight_run(tmp_path, capsys):
    # the staged run (stop at step 2, snapshot, go on to 4) reaches the weights of a run
    # straight to 4, and a rerun of a finished run does nothing; another recipe is refused
    from safetensors.torch import load_file

    long_pretrain = _example("long_pretrain")
    common = ["--family", "ssast", "--scale", "quick", "--batch-size", "4", "--valid-every", "2",
              "--save-every", "1", "--no-progress"]
    assert long_pretrain.main([*common, "--out", str(tmp_path / "staged"), "--snapshots", "2", "4"]) == 0
    assert long_pretrain.main([*common, "--out", str(tmp_path / "straight"), "--snapshots", "4"]) == 0
    staged = load_file(str(tmp_path / "staged" / "snapshots" / "step-000004" / "model.safetensors"))
    straight = load_file(str(tmp_path / "straight" / "snapshots" / "step-000004" / "model.safetensors"))
    assert staged.keys() == straight.keys() and all(torch.equal(staged[k], straight[k]) for k in staged)
    assert (tmp_path / "staged" / "snapshots" / "step-000002" / "config.json").is_file()
    info = json.loads((tmp_path / "staged" / "long_run.json").read_text())
    assert [s["to_step"] for s in info["sittings"]] == [2, 4] and info["recipe"]["family"] == "ssast"
    assert long_pretrain.main([*common, "--out", str(tmp_path / "staged"), "--snapshots", "2", "4"]) == 0
    assert len(json.loads((tmp_path / "staged" / "long_run.json").read_text())["sittings"]) == 2
    with pytest.raises(SystemExit):
        long_pretrain.main([*common, "--out", str(tmp_path / "staged"), "--lr", "0.5"])
    # shipping puts the last snapshot and its provenance where load_model finds it by name
    from ssamba.models import shipped

    shipped.SHIPPED_ROOT, saved = tmp_path / "pretrained", shipped.SHIPPED_ROOT
    try:
        assert long_pretrain.main([*common, "--out", str(tmp_path / "staged"), "--snapshots", "2", "4",
                                   "--ship", "tiny-test-demo"]) == 0
        loaded = ssamba.load_model("tiny-test-demo")
        assert all(torch.equal(loaded.state_dict()[k], staged[k]) for k in staged)
        provenance = json.loads((tmp_path / "pretrained" / "tiny-test-demo" / "provenance.json").read_text())
        assert provenance["steps"] == 4 and provenance["recipe"]["family"] == "ssast"
        assert all((tmp_path / "pretrained" / "tiny-test-demo" / f).is_file() for f in shipped.PROVENANCE_FILES)
    finally:
        shipped.SHIPPED_ROOT = saved
    # the gain curve probes each snapshot and random init over the seeds, and log-mel
    gain_curve = _example("gain_curve", "lab")
    table, figure = tmp_path / "gain.csv", tmp_path / "gain.png"
    assert gain_curve.main(["--runs", str(tmp_path / "staged"), "--scale", "quick", "--seeds", "2",
                            "--tasks", "kws", "--csv", str(table), "--plot", str(figure)]) == 0
    rows = list(csv.DictReader(table.open()))
    assert sorted((r["representation"], r["step"], r["seed"]) for r in rows) == sorted(
        [("log-mel", "", s) for s in "01"] + [("random init", "0", s) for s in "01"]
        + [("pretrained", step, s) for step in ("2", "4") for s in "01"])
    assert all(0 <= float(r["test_acc"]) <= 1 and r["task"] == "kws" for r in rows)
    assert figure.stat().st_size > 10_000
    with pytest.raises(SystemExit):
        gain_curve.main(["--runs", str(tmp_path)])  # not a long run
    capsys.readouterr()
    assert gain_curve.main(["--table", "--csv", str(table)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| task | representation") and len(lines) == 2 + 4  # log-mel, random, steps 2, 4
    assert all(line.count("|") == 6 for line in lines) and lines[-1].split("|")[-2].strip().startswith(("+", "-"))
    assert gain_curve.main(["--layers", "kws", "--csv", str(table)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "layer 0" in lines[0] and len(lines) == 2 + 3  # random init, steps 2 and 4
    assert gain_curve.main(["--masked", "--runs", str(tmp_path / "staged")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| step | staged |" and [line.split("|")[1].strip() for line in lines[2:]] == ["2", "4"]
    # the plateau probe reads the attention of masked queries at every snapshot
    capsys.readouterr()
    assert _example("plateau_probe", "lab").main([str(tmp_path / "staged"), "--clips", "8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[2] for line in lines] == ["0:", "2:", "4:"]
    for line in lines:
        values = dict(zip(line.split()[3::2], map(float, line.split()[4::2])))
        assert set(values) == {"entropy", "local", "uniform"} and all(0 < v <= 1 for v in values.values())
