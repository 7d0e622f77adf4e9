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
