"""The lean install: the library runs without the demo's extras, and a missing extra is
one error line that says how to install it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ssamba.cli import main
from ssamba.errors import MissingDependencyError, require

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("espeakng_loader", "tinysoundfont", "matplotlib", "pyaudio")


def test_core_dependencies_leave_out_the_demo_stack():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {r.split(">")[0].split("=")[0].split("[")[0].strip().lower() for r in project["dependencies"]}
    assert names.isdisjoint({"espeakng-loader", "tinysoundfont", "matplotlib", "pyaudio"})
    assert {"espeakng-loader", "matplotlib"} <= {r.split(">")[0] for r in project["optional-dependencies"]["demo"]}


@pytest.mark.slow
def test_library_work_imports_no_extra():
    # Build, run, save and load a model and embed audio: none of it may need the extras.
    code = (
        "import sys, tempfile, torch, ssamba\n"
        "m = ssamba.create_model('ssamba_test').eval()\n"
        "d = tempfile.mkdtemp()\n"
        "ssamba.save_model(m, d)\n"
        "e = ssamba.load(d)\n"
        "with torch.no_grad():\n"
        "    e.scene_embeddings(torch.zeros(1, 16000))\n"
        f"print(sorted(set({EXTRAS!r}) & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_require_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "tinysoundfont", None)  # import fails as if not installed
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps 'tinysoundfont>=0\.3\.7'"):
        require("tinysoundfont", "the demo's instrument notes")
    assert require("json", "anything").dumps([]) == "[]"


def test_demo_without_an_extra_is_one_error_line_before_any_work(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)
    assert main(["demo", "--quick", "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ssamba: error: the demo's speech needs the optional package 'espeakng_loader': "
                   "pip install 'ssamba[demo]'"]
    assert not (tmp_path / "out").exists()
