import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import ssamba
from ssamba.training.checkpoint import (flatten_state, latest_checkpoint, load_checkpoint, save_checkpoint,
                                        unflatten_state)


def test_nested_state_round_trip():
    state = {"step": 7, "opt": {"state": {0: {"exp_avg": torch.randn(3), "step": torch.tensor(2.0)}},
                                "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.99), "params": [0, 1]}]},
             "name": "x", "none": None, "flags": [True, False]}
    tensors, skeleton = flatten_state(state)
    back = unflatten_state(skeleton, tensors)
    assert back["step"] == 7 and back["name"] == "x" and back["none"] is None
    assert back["opt"]["param_groups"][0]["betas"] == (0.9, 0.99)
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], state["opt"]["state"][0]["exp_avg"])
    assert list(back["opt"]["state"]) == [0]  # int keys stay ints
    with pytest.raises(TypeError, match="cannot checkpoint"):
        flatten_state({"bad": object()})


def test_save_load_keep_and_latest(tmp_path):
    model = ssamba.create_model("ssamba_test")
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, {"step": step, "w": torch.ones(2) * step}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000002", "step-00000003"]
    latest = latest_checkpoint(tmp_path)
    assert latest.name == "step-00000003"
    loaded, state = load_checkpoint(latest)
    assert state["step"] == 3 and torch.equal(state["w"], torch.full((2,), 3.0))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert ssamba.load_model(latest).config == model.config  # a checkpoint is also a model directory


def test_latest_names_a_checkpoint_of_its_own_folder_only(tmp_path):
    model = ssamba.create_model("ssamba_test")
    elsewhere = save_checkpoint(tmp_path / "other", 5, model, {"step": 5})
    run = tmp_path / "run"
    save_checkpoint(run, 1, model, {"step": 1})
    for planted in (str(elsewhere), "../other/step-00000005", "step-00000001/../../other/step-00000005"):
        (run / "latest").write_text(planted)
        with pytest.raises(ValueError, match="must name a checkpoint folder"):
            latest_checkpoint(run)
    (run / "latest").write_text("step-00000001\n")
    assert latest_checkpoint(run) == run / "step-00000001"


WRITER = """
import sys, torch, ssamba
from ssamba.training.checkpoint import save_checkpoint
model = ssamba.create_model("ssamba_test", embed_dim=256)  # a few MB per checkpoint
big = {"moments": torch.randn(4_000_000)}
step = 0
print("ready", flush=True)
while True:
    step += 1
    save_checkpoint(sys.argv[1], step, model, {"step": step, **big}, keep=2)
"""


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.3, 0.55, 0.8])
def test_sigkill_during_writes_leaves_a_loadable_checkpoint(tmp_path, delay):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.time() + 60
        while latest_checkpoint(tmp_path) is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(delay)  # now in the middle of some later write
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    latest = latest_checkpoint(tmp_path)
    assert latest is not None
    model, state = load_checkpoint(latest)
    assert state["step"] == int(latest.name.split("-")[1])
    assert state["moments"].shape == (4_000_000,)


def test_checkpoint_folders_and_files_get_the_umask_modes(tmp_path):
    import stat

    umask = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path, 1, ssamba.create_model("ssamba_test"), {"step": 1})
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755  # not mkdtemp's 0700
    assert {stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()} == {0o644}
