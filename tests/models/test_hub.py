"""Hugging Face Hub: models load by repo id from a cache laid out as huggingface_hub lays
it out, offline; push_to_hub uploads a saved model with its card (to a recording fake).
Nothing here touches the network."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

import ssamba
from ssamba.cli import main
from ssamba.models import hub

huggingface_hub = pytest.importorskip("huggingface_hub")


def _cache_model(hf_home: Path, repo_id: str, model, revision: str = "main", tag: str | None = None) -> str:
    """Put ``model`` into ``hf_home/hub`` as a snapshot of ``repo_id``: blobs named by their
    hash, a snapshot folder of symlinks to them, and refs/<revision> (and a tag) naming it."""
    storage = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    saved = hf_home / "saved" / repo_id / revision
    ssamba.save_model(model, saved)
    files = {p.name: p.read_bytes() for p in saved.iterdir()}
    commit = hashlib.sha1(b"".join(files[k] for k in sorted(files))).hexdigest()
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (storage / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    (storage / "refs").mkdir(exist_ok=True)
    for ref in [revision] + ([tag] if tag else []):
        (storage / "refs" / ref).write_text(commit)
    return commit


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """HF_HOME with org/tiny at main (seed 0) and at tag v2 (seed 1), HF_HUB_OFFLINE=1."""
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models = {}
    for seed, revision, tag in ((0, "main", None), (1, "dev", "v2")):
        torch.manual_seed(seed)
        name = tag or revision
        models[name] = ssamba.create_model("ssamba_test", input_tdim=64).eval()
        models[name + "_commit"] = _cache_model(home, "org/tiny", models[name], revision, tag)
    return models


def _same(a, b) -> bool:
    spec = torch.randn(1, 64, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a.eval().forward_features(spec), b.eval().forward_features(spec))


def test_repo_ids_load_from_the_cache_offline_at_each_revision(offline_cache):
    main_model = ssamba.load_model("org/tiny")
    assert _same(main_model, offline_cache["main"])
    assert _same(ssamba.load_model("org/tiny@v2"), offline_cache["v2"])
    assert _same(ssamba.load_model("hf://org/tiny@" + offline_cache["main_commit"]), offline_cache["main"])
    assert not _same(main_model, offline_cache["v2"])
    assert _same(type(main_model).from_pretrained("org/tiny@v2"), offline_cache["v2"])
    embedder = ssamba.load("org/tiny")
    assert embedder.scene_embeddings(torch.zeros(1, 16000)).shape == (1, main_model.config.embed_dim)


def test_command_line_takes_a_repo_id(offline_cache, tmp_path, capsys):
    import numpy as np
    import soundfile

    soundfile.write(tmp_path / "a.wav", np.zeros(16000, dtype=np.float32), 16000)
    assert main(["embed", str(tmp_path / "a.wav"), "--checkpoint", "org/tiny@v2", "--out", str(tmp_path / "e"),
                 "--no-progress"]) == 0
    assert (tmp_path / "e" / "a.npz").is_file()
    assert main(["embed", str(tmp_path / "a.wav"), "--checkpoint", "org/missing", "--out", str(tmp_path / "f"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ssamba: error: org/missing is not in the Hugging Face cache")
    assert "HF_HUB_OFFLINE is set" in err[0]


def test_local_paths_win_over_repo_ids(offline_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(5)
    local = ssamba.create_model("ssamba_test", input_tdim=64).eval()
    ssamba.save_model(local, tmp_path / "org" / "tiny")
    assert not hub.is_repo_id("org/tiny")
    assert _same(ssamba.load_model("org/tiny"), local)
    assert hub.is_repo_id("someone/else@v1") and not hub.is_repo_id("a/b/c") and not hub.is_repo_id("x")


def test_push_to_hub_uploads_the_model_and_its_card(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    class FakeApi:  # records what would be sent; keeps a copy of the folder
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, repo_id, folder_path, **kwargs):
            copy = tmp_path / "uploaded"
            copy.mkdir()
            for p in Path(folder_path).iterdir():
                (copy / p.name).write_bytes(p.read_bytes())
            calls.append(("upload_folder", repo_id, kwargs))
            return type("Info", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    torch.manual_seed(0)
    model = ssamba.create_model("ssast_test_patch", input_tdim=64).eval()
    url = model.push_to_hub("org/pushed", private=True, token="t", training={"data": "synthetic suite", "steps": 24},
                            metrics={"kws accuracy": 0.4123})
    assert url == "https://huggingface.co/org/pushed/commit/abc"
    assert [c[0] for c in calls] == ["init", "create_repo", "upload_folder"] and calls[0][1] == "t"
    assert calls[1][2]["private"] is True
    uploaded = tmp_path / "uploaded"
    assert {p.name for p in uploaded.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    card = (uploaded / "README.md").read_text()
    meta = json.loads((uploaded / "config.json").read_text())
    assert "library_name: ssamba" in card and "SSAST audio encoder" in card
    assert f"embedding size {meta['config']['embed_dim']}" in card
    assert "**data**: synthetic suite" in card and "| kws accuracy | 0.4123 |" in card
    assert _same(ssamba.load_model(uploaded), model)


def test_push_refuses_offline_and_bad_ids(monkeypatch):
    model = ssamba.create_model("ssamba_test", input_tdim=64)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.HubError, match="HF_HUB_OFFLINE"):
        model.push_to_hub("org/x")
    with pytest.raises(ValueError, match="not a Hugging Face repo id"):
        hub.push_to_hub(model, "org/x@main")


def test_hostile_revisions_and_planted_caches_are_refused(offline_cache, tmp_path, capsys):
    # campaign 3 (issue 34): nothing outside the repo's own snapshots is ever loaded
    elsewhere = tmp_path / "elsewhere"
    torch.manual_seed(5)
    ssamba.save_model(ssamba.create_model("ssamba_test", input_tdim=64), elsewhere)
    storage = Path(os.environ["HF_HOME"]) / "hub" / "models--org--tiny"
    for spec in ("org/tiny@../../../ptr", "org/tiny@a/../b", "org/tiny@/etc"):
        with pytest.raises(ValueError, match="not a path"):
            hub.resolve_repo(spec)
    (storage / "refs" / "evil").write_text(os.path.relpath(elsewhere, storage / "snapshots"))
    with pytest.raises(hub.HubError, match="outside"):
        hub.resolve_repo("org/tiny@evil")
    planted = storage / "snapshots" / ("f" * 40)
    planted.mkdir()
    for name in ("config.json", "model.safetensors"):
        os.symlink(elsewhere / name, planted / name)
    with pytest.raises(hub.HubError, match="points outside the repo"):
        hub.resolve_repo("org/tiny@" + "f" * 40)
    assert main(["embed", str(tmp_path), "--checkpoint", "org/tiny@evil", "--out", str(tmp_path / "e")]) == 2
    assert capsys.readouterr().err.count("ssamba: error:") == 1


def test_a_mistyped_local_path_is_not_looked_up_on_the_hub(offline_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert not hub.is_repo_id("runs/typo") and hub.is_repo_id("hf://runs/typo") and hub.is_repo_id("org/tiny")
    with pytest.raises(FileNotFoundError, match="no such model folder: runs/typo"):
        ssamba.load_model("runs/typo")


def test_a_runs_latest_pointer_cannot_lead_the_loader_elsewhere(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    torch.manual_seed(3)
    ssamba.save_model(ssamba.create_model("ssamba_test", input_tdim=64), elsewhere)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "latest").write_text(str(elsewhere))
    with pytest.raises(ValueError, match="must name a checkpoint folder"):
        ssamba.load_model(run)
