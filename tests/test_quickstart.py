"""The README's quickstart, run as written on a generated folder of four classes of 44.1
kHz stereo audio: prepare with a split, fine-tune, evaluate without a label CSV, predict
with class names, embed; every file it writes readable by the group. Only the fine-tuning
gets extra options, appended after the README's, to make it a tiny model and a few steps."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.preset=ssamba_test", "frontend.target_length=64", "run.epochs=1", "run.max_steps=3",
        "run.batch_size=8", "optim.warmup_steps=1", "run.progress=false", "data.num_workers=0"]
CLASSES = {"dog": 300.0, "cat": 900.0, "bird": 2500.0, "hum": 120.0}


def quickstart_commands() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- quickstart -->\n```bash\n(.*?)```\n<!-- /quickstart -->", readme, re.S).group(1)
    return [shlex.split(line) for line in block.strip().splitlines()]


def test_the_quickstart_is_five_ssamba_commands():
    assert [c[:2] for c in quickstart_commands()] == [["ssamba", "prepare"], ["ssamba", "finetune"],
                                                      ["ssamba", "evaluate"], ["ssamba", "predict"],
                                                      ["ssamba", "embed"]]


@pytest.mark.slow
def test_the_readme_quickstart_runs_as_written(tmp_path):
    rng = np.random.default_rng(0)
    for name, freq in CLASSES.items():
        (tmp_path / "my_sounds" / name).mkdir(parents=True)
        for i in range(10):
            t = np.arange(int(44100 * 0.7)) / 44100
            x = 0.2 * np.sin(2 * np.pi * freq * (1 + 0.05 * i) * t) + 0.01 * rng.standard_normal(t.size)
            soundfile.write(tmp_path / "my_sounds" / name / f"{name}{i}.wav", np.stack([x, 0.7 * x], 1), 44100)
    (tmp_path / "other_folder").mkdir()
    soundfile.write(tmp_path / "clip.wav", np.sin(np.arange(30000) / 10.0) * 0.2, 44100)
    soundfile.write(tmp_path / "other_folder" / "b.wav", np.sin(np.arange(30000) / 3.0) * 0.2, 44100)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outputs = {}
    old_umask = os.umask(0o022)
    try:
        for command in quickstart_commands():
            argv = [sys.executable, "-m", "ssamba.cli", *command[1:]]
            if command[1] == "finetune":
                argv += TINY
            proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
            assert proc.returncode == 0, (command, proc.stderr[-2000:])
            outputs[command[1]] = proc
    finally:
        os.umask(old_umask)

    assert {p.name for p in (tmp_path / "lists").iterdir()} == {"train.json", "validation.json", "test.json",
                                                                "labels.csv"}
    assert len(outputs["finetune"].stderr.splitlines()) < 15  # a short log, one conversion summary line
    assert "resampled from 44.1 kHz" in outputs["finetune"].stderr
    evaluation = json.loads(outputs["evaluate"].stdout)
    assert evaluation["scored"] == evaluation["clips"] > 0 and evaluation["skipped"] == []
    lines = outputs["predict"].stdout.strip().splitlines()
    assert len(lines) == 2 and all(any(name in line for name in CLASSES) for line in lines)
    index = json.loads((tmp_path / "embeddings" / "index.json").read_text())
    assert index["complete"] and len(index["files"]) == 40
    written = [p for p in (tmp_path / "runs").rglob("*")] + [p for p in (tmp_path / "embeddings").rglob("*")]
    assert written and all(p.stat().st_mode & stat.S_IRGRP for p in written)  # colleagues can read them
