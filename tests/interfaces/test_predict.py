"""A user's own folder end to end: prepare with a split, fine-tune, then evaluate and
predict with the class names the model carries; predictions resume like embeddings."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile

import ssamba
from ssamba.cli import main

from ..conftest import save_test_model

CLASSES = ("bird", "drum", "hum", "wind")


def _clip(kind: str, rng, rate=44100, seconds=0.6):
    t = np.arange(int(rate * seconds)) / rate
    if kind == "bird":
        x = np.sin(2 * np.pi * (3000 + 800 * np.sin(2 * np.pi * 6 * t)) * t)
    elif kind == "drum":
        x = np.exp(-20 * (t % 0.25)) * rng.standard_normal(t.size)
    elif kind == "hum":
        x = np.sin(2 * np.pi * 100 * t) + 0.5 * np.sin(2 * np.pi * 200 * t)
    else:
        x = np.convolve(rng.standard_normal(t.size), np.ones(40) / 40, mode="same") * 4
    x = 0.2 * x / np.abs(x).max()
    return np.stack([x, 0.8 * x], axis=1).astype(np.float32)  # stereo, 44.1 kHz


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    rng = np.random.default_rng(0)
    for kind in CLASSES:
        (root / "data" / kind).mkdir(parents=True)
        for i in range(12):
            soundfile.write(root / "data" / kind / f"{kind}{i:02d}.wav", _clip(kind, rng), 44100)
    assert main(["prepare", "folder", str(root / "data"), str(root / "lists"), "--labels-from-subfolder",
                 "--split", "70,15,15"]) == 0
    assert main(["finetune", "model.preset=ssamba_test", "frontend.target_length=64",
                 f"data.train={root / 'lists' / 'train.json'}", f"data.valid={root / 'lists' / 'validation.json'}",
                 f"data.label_csv={root / 'lists' / 'labels.csv'}", f"run.out_dir={root / 'run'}",
                 "run.epochs=2", "run.steps_per_epoch=10", "run.batch_size=8", "run.progress=false",
                 "run.plot=false", "data.num_workers=0"]) == 0
    return root


def test_the_model_carries_its_class_names(trained):
    model = ssamba.load_model(trained / "run")
    assert model.labels == {"ids": list(CLASSES), "names": list(CLASSES), "multilabel": False}
    meta = json.loads((trained / "run" / "final" / "config.json").read_text())
    assert meta["id2label"] == {str(i): c for i, c in enumerate(CLASSES)}


def test_evaluate_needs_no_label_csv_and_refuses_a_wrong_one(trained, capsys, tmp_path):
    capsys.readouterr()
    assert main(["evaluate", str(trained / "run"), str(trained / "lists" / "test.json")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["scored"] == result["clips"] > 0 and 0 <= result["acc"] <= 1
    other = tmp_path / "labels.csv"
    other.write_text("index,mid,display_name\n0,a,a\n1,b,b\n2,c,c\n3,d,d\n")
    assert main(["evaluate", str(trained / "run"), str(trained / "lists" / "test.json"), str(other)]) == 2
    assert "lists other classes" in capsys.readouterr().err


def test_predict_prints_class_names_and_writes_csv_and_json(trained, capsys, tmp_path):
    files = sorted((trained / "data").rglob("*.wav"))[:6]
    capsys.readouterr()
    assert main(["predict", str(trained / "run"), *map(str, files), "--top-k", "2", "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6 and all(any(c in line for c in CLASSES) for line in lines)
    out = tmp_path / "preds.csv"
    assert main(["predict", str(trained / "run"), str(trained / "data"), "--out", str(out), "--no-progress"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 48 * 4 and {r["name"] for r in rows} == set(CLASSES)  # top-5 capped at 4 classes
    by_file = {}
    for r in rows:
        by_file.setdefault(r["audio"], []).append(float(r["probability"]))
    assert all(abs(sum(p) - 1) < 1e-4 and p == sorted(p, reverse=True) for p in by_file.values())

    as_json = tmp_path / "preds.json"
    assert main(["predict", str(trained / "run"), *map(str, files[:3]), "--out", str(as_json), "--no-progress"]) == 0
    assert main(["predict", str(trained / "run"), *map(str, files), "--out", str(as_json), "--no-progress"]) == 0
    content = json.loads(as_json.read_text())
    assert len(content["predictions"]) == 6 and [c["id"] for c in content["classes"]] == list(CLASSES)
    assert "3 from an earlier run" in capsys.readouterr().out


def test_predict_refuses_another_models_file_and_an_embedding_model(trained, capsys, tmp_path):
    out = tmp_path / "preds.json"
    out.write_text(json.dumps({"model": "someone-else", "predictions": []}))
    wav = next((trained / "data").rglob("*.wav"))
    assert main(["predict", str(trained / "run"), str(wav), "--out", str(out)]) == 2
    assert "another model" in capsys.readouterr().err
    encoder = save_test_model(tmp_path / "encoder")
    assert main(["predict", str(encoder), str(wav)]) == 2
    assert "needs a fine-tuned classifier" in capsys.readouterr().err


def test_training_and_embedding_summarise_conversions_in_one_line(trained, capsys, caplog, tmp_path):
    import logging

    caplog.set_level(logging.INFO)
    capsys.readouterr()
    assert main(["finetune", "model.preset=ssamba_test", "frontend.target_length=64",
                 f"data.train={trained / 'lists' / 'train.json'}", f"data.label_csv={trained / 'lists' / 'labels.csv'}",
                 f"run.out_dir={tmp_path / 'run'}", "run.epochs=2", "run.steps_per_epoch=2", "run.batch_size=8",
                 "run.progress=false", "run.plot=false", "data.num_workers=0"]) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err + caplog.text
    assert "resampled 44100 Hz" not in text and "downmixed 2 channels" not in text  # no line per file
    lines = [line for line in text.splitlines() if "resampled from" in line]
    assert lines == ["first epoch: 16 of 16 clips resampled from 44.1 kHz to 16 kHz; 16 downmixed to mono"]
    assert main(["embed", str(trained / "data" / "bird"), "--checkpoint", str(trained / "run"),
                 "--out", str(tmp_path / "e"), "--no-progress"]) == 0
    assert "12 of 12 clips resampled from 44.1 kHz to 16 kHz; 12 downmixed to mono" in capsys.readouterr().err


@pytest.mark.slow  # the ONNX export traces the model (about a minute)
def test_export_with_frontend_runs_on_a_raw_waveform_and_agrees_with_predict(trained, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from ssamba.frontend import load_audio

    out = tmp_path / "model.onnx"
    assert main(["export", str(trained / "run"), str(out), "--with-frontend"]) == 0  # checks 1 s and 3.3 s itself
    captured = capsys.readouterr()
    assert "export: tracing" in captured.err and "wrote" in captured.out
    wav = sorted((trained / "data" / "hum").glob("*.wav"))[0]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["ssamba_config"])
    assert meta["labels"]["names"] == list(CLASSES) and meta["onnx"]["input"] == "waveform"
    wave = load_audio(wav).numpy()[None]  # the 44.1 kHz stereo file, read as predict reads it
    probabilities = session.run(["probabilities"], {"waveform": wave})[0][0]
    assert main(["predict", str(trained / "run"), str(wav), "--top-k", "4", "--out", str(tmp_path / "p.json"),
                 "--no-progress"]) == 0
    top = json.loads((tmp_path / "p.json").read_text())["predictions"][0]["top"]
    for entry in top:
        assert abs(probabilities[CLASSES.index(entry["id"])] - entry["probability"]) < 1e-4
