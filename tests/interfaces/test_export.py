"""ONNX export: onnxruntime matches PyTorch to 1e-4 at two lengths for both families, the
file carries its config, and the command line reports the check."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import ssamba
from ssamba.cli import main

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module", params=["ssamba_test", "ssast_test_patch"])
def exported(request, tmp_path_factory):
    from ssamba.interfaces.export import export_onnx

    torch.manual_seed(0)
    # two blocks (ssamba_test: one mirrored layer pair): the export's trace costs about
    # 9 s per SSAMBA block on this machine, and more blocks check nothing new
    model = ssamba.create_model(request.param, input_tdim=64, depth=2).eval()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx")
    return model, path


def test_onnxruntime_matches_torch_at_two_lengths_and_batches(exported):
    from ssamba.interfaces.export import check_onnx

    model, path = exported
    for batch in (1, 3):
        rows = check_onnx(path, model, [48, 208], batch=batch, repeats=1)  # shorter and longer than trained
        assert [r["frames"] for r in rows] == [48, 208]
        for r in rows:
            assert r["max_rel_diff"] < 1e-4 and r["max_abs_diff"] < 1e-4, r
            assert r["torch_s"] > 0 and r["onnxruntime_s"] > 0


def test_the_file_carries_its_config_and_the_scan_is_an_onnx_scan(exported):
    model, path = exported
    graph = onnx.load(str(path))
    meta = json.loads({p.key: p.value for p in graph.metadata_props}["ssamba_config"])
    assert meta["config"]["embed_dim"] == model.config.embed_dim
    ops = {n.op_type for n in graph.graph.node}
    assert ("Scan" in ops) == (meta["family"] == "ssamba")
    assert not [n.domain for n in graph.graph.node if n.domain not in ("", "ai.onnx")]  # standard operators only


def test_export_command_checks_and_reports(tmp_path, capsys):
    torch.manual_seed(0)
    ssamba.save_model(ssamba.create_model("ssast_test_patch", input_tdim=64), tmp_path / "m")
    assert main(["export", str(tmp_path / "m"), str(tmp_path / "m.onnx"), "--check-frames", "64", "96"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'm.onnx'}" in out and "onnxruntime s" in out
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["64", "96"]


def test_export_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert main(["export", "ssast_test_patch", str(tmp_path / "x.onnx"), "--check-frames", "16"]) == 2
    assert capsys.readouterr().err.strip().endswith("--check-frames must be at least 32 frames (two 16-frame patch columns)")
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    assert main(["export", "ssast_test_patch", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "ssamba: error: ONNX export needs the optional package 'onnxscript': pip install 'ssamba[onnx]'"
