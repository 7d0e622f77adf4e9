"""Encoders shipped inside the package load by name, carry their provenance, and never
shadow a local folder of the same name."""

import json

import pytest
import torch

import ssamba
from ssamba.models import shipped
from ssamba.models.shipped import PROVENANCE_FILES, shipped_dir, shipped_names


@pytest.fixture()
def shipped_root(tmp_path, monkeypatch):
    root = tmp_path / "pretrained"
    model = ssamba.create_model("ssamba_test")
    ssamba.save_model(model, root / "tiny-demo")
    monkeypatch.setattr(shipped, "SHIPPED_ROOT", root)
    return root, model


def test_a_shipped_name_loads_like_a_folder(shipped_root, tmp_path, monkeypatch):
    root, model = shipped_root
    assert shipped_names() == ["tiny-demo"] and shipped_dir("tiny-demo") == root / "tiny-demo"
    monkeypatch.chdir(tmp_path)  # no local folder called tiny-demo here
    loaded = ssamba.load_model("tiny-demo")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    with pytest.raises(FileNotFoundError):
        ssamba.load_model("tiny-demo-missing")


def test_a_local_folder_of_the_same_name_wins(shipped_root, tmp_path, monkeypatch):
    local = tmp_path / "work"
    other = ssamba.create_model("ssast_test_patch")
    ssamba.save_model(other, local / "tiny-demo")
    monkeypatch.chdir(local)
    assert shipped_dir("tiny-demo") is None
    assert type(ssamba.load_model("tiny-demo")).__name__ == type(other).__name__


@pytest.mark.parametrize("name", shipped_names())
def test_every_shipped_encoder_loads_and_carries_its_provenance(name):
    model = ssamba.load_model(name)
    assert model.frontend_config is not None  # its front end travels with it
    folder = shipped_dir(name)
    for file in PROVENANCE_FILES:
        assert (folder / file).is_file(), file
    provenance = json.loads((folder / "provenance.json").read_text())
    assert len(provenance["commit"]) == 40 and provenance["steps"] > 0


def test_the_embedder_and_hear_take_a_shipped_name(shipped_root, tmp_path, monkeypatch):
    from ssamba import hear
    from ssamba.interfaces.embedder import load

    monkeypatch.chdir(tmp_path)
    root, model = shipped_root
    expected = model.state_dict()
    for embedder in (load("tiny-demo"), hear.load_model("tiny-demo")):
        got = embedder.encoder.state_dict()  # the embedder may re-stride the patches: compare the rest
        same = [k for k in expected if got[k].shape == expected[k].shape]
        assert len(same) > 10 and all(torch.equal(got[k], expected[k]) for k in same)
    with pytest.raises(FileNotFoundError, match="shipped encoder \\(tiny-demo\\)"):
        load("tiny-dmeo")


def test_ssamba_models_lists_the_shipped_encoders(shipped_root, capsys):
    from ssamba.cli import main

    root, _ = shipped_root
    recipe = {"family": "ssamba", "batch_size": 32, "lr": 1e-3}
    (root / "tiny-demo" / "provenance.json").write_text(json.dumps({"steps": 10000, "recipe": recipe}))
    assert main(["models", "ssamba_test"]) == 0
    line = [l for l in capsys.readouterr().out.splitlines() if "tiny-demo" in l]
    assert line and "10000 steps" in line[0] and "ssamba" in line[0]
