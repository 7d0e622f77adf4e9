"""torchrun with gloo on CPU: two processes train like one with the same global batch."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from .synth import make_unlabeled

pytestmark = pytest.mark.slow  # launches torchrun

SCRIPT = """
import sys
from pathlib import Path
import torch
from safetensors.torch import save_file
from ssamba.training import distributed
from ssamba.training.experiment import load_experiment
from ssamba.training.loop import Trainer
from ssamba.training.run import _dataset, _join_world
from ssamba.models import create_model
from ssamba.objectives import MaskedPatchModeling
from ssamba.training.tasks import PretrainTask

manifest, out_dir, steps = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
config = load_experiment(None, {
    "model.preset": "ssamba_test", "model.options": {"drop_path_rate": 0.0},
    "frontend.target_length": 64, "objective.num_masked": 8, "optim.lr": 1e-3, "optim.warmup_steps": 2,
    "data.train": manifest, "data.valid": manifest, "data.num_workers": 0,
    "run.out_dir": str(out_dir), "run.batch_size": 4, "run.epochs": 1, "run.steps_per_epoch": steps,
    "run.progress": False})
config = _join_world(config)
torch.manual_seed(0)
encoder = create_model(config.model.preset, **config.model.options)
objective = MaskedPatchModeling(config.objective, 32, (16, 16))
task = PretrainTask(encoder, objective)
trainer = Trainer(task, _dataset(manifest, config, None), _dataset(manifest, config, None),
                  config.optim, config.run, config.to_dict())
resume = len(sys.argv) > 4
if resume:
    assert trainer.resume(), "no checkpoint to resume from"
trainer.fit()
rank = distributed.current().rank
state = {k: v.contiguous() for k, v in task.modules.state_dict().items()}
save_file(state, str(out_dir / f"rank{rank}.safetensors"))
print("valid", trainer.history[-1])
distributed.teardown()
"""


def _run(args, cwd):
    proc = subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _torchrun(nproc, *args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]


# The official InfoNCE (softmax over predictions) is invariant to a shift shared by all
# predictions, so the prediction head's biases get gradients that are zero up to rounding;
# Adam turns that rounding noise into +-lr steps whose sign differs between any two
# summation orders. They are left out of the comparison.
NOISE_ONLY = ("objective.nce_head.0.bias", "objective.nce_head.2.bias")


def _close(a, b, atol=2e-5):
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a if k not in NOISE_ONLY)
    assert worst <= atol, worst


def test_two_processes_train_like_one(tmp_path):
    manifest = str(make_unlabeled(tmp_path, 12, 0, "clips"))
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)

    _run([sys.executable, str(script), manifest, str(tmp_path / "single"), "3"], tmp_path)
    _run(_torchrun(2, str(script), manifest, str(tmp_path / "ddp"), "3"), tmp_path)

    single = load_file(str(tmp_path / "single" / "rank0.safetensors"))
    rank0 = load_file(str(tmp_path / "ddp" / "rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "ddp" / "rank1.safetensors"))
    for k in rank0:
        assert torch.equal(rank0[k], rank1[k]), k  # replicas never drift apart
    _close(single, rank0)
    saved = load_file(str(tmp_path / "ddp" / "checkpoints" / "step-00000003" / "model.safetensors"))
    assert all(torch.equal(saved[k], rank0[f"encoder.{k}"]) for k in saved)  # rank 0 wrote the checkpoint

    # a run checkpointed by 2 processes resumes in 1 (a different world size) and goes on
    _run([sys.executable, str(script), manifest, str(tmp_path / "ddp"), "5", "resume"], tmp_path)
    _run([sys.executable, str(script), manifest, str(tmp_path / "single"), "5", "resume"], tmp_path)
    _close(load_file(str(tmp_path / "single" / "rank0.safetensors")),
           load_file(str(tmp_path / "ddp" / "rank0.safetensors")))
