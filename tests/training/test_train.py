"""Pretraining and fine-tuning end to end on audio synthesised here."""

import math

import pytest
import torch

from ssamba.training.experiment import load_experiment
from ssamba.training.loop import Trainer
from ssamba.training.run import finetune, pretrain

from .synth import CLASSES, make_labels, make_set, make_unlabeled


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    return {
        "train": str(make_set(root, 12, 0, "train")),  # 48 clips
        "valid": str(make_set(root, 4, 1, "valid")),  # 16 clips, unseen
        "labels": str(make_labels(root)),
        "unlabeled": str(make_unlabeled(root, 256, 2, "unlabeled")),
        "unlabeled_valid": str(make_unlabeled(root, 32, 3, "unlabeled_valid")),
    }


def pretrain_config(audio, out_dir, **extra):
    values = {
        "model.preset": "ssamba_test",
        "frontend.target_length": 64,  # 8 x 4 patches
        "objective.num_masked": 8,  # chance accuracy 1/8
        "optim.lr": 2e-3,
        "optim.warmup_steps": 20,
        "data.train": audio["unlabeled"],
        "data.valid": audio["unlabeled_valid"],
        "data.num_workers": 0,
        "run.out_dir": str(out_dir),
        "run.batch_size": 8,
        "run.log_every": 5,
        "run.progress": False,
    }
    values.update(extra)
    return load_experiment(None, values)


@pytest.mark.slow
def test_pretraining_lowers_the_loss_and_learns_to_pick_masked_patches(audio, tmp_path):
    # random masking: on 8 x 4 patch grids, 3x3..5x5 clusters leave a tiny model too
    # little context to learn much in 300 steps (cluster masking is exercised elsewhere)
    config = pretrain_config(audio, tmp_path, **{
        "run.epochs": 6, "run.steps_per_epoch": 50, "objective.use_separate_passes": False,
        "objective.masking": "random", "model.options": {"drop_path_rate": 0.0}})
    summary = pretrain(config)
    valid = [row for row in summary_history(tmp_path) if "valid_loss" in row]
    first, last = valid[0], valid[-1]
    assert last["valid_loss"] < 0.8 * first["valid_loss"]
    assert last["valid_acc"] > 2.5 * (1 / 8)  # chance: each of 8 masked patches picked at random
    assert (tmp_path / "final" / "model.safetensors").is_file()
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert summary["steps"] == 300


def summary_history(out_dir):
    import csv

    with open(out_dir / "metrics.csv") as handle:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_finetuning_beats_chance_clearly(audio, tmp_path):
    config = load_experiment(None, {
        "task": "finetune",
        "model.preset": "ssamba_test",
        "model.options": {"patch_stride": [10, 10]},
        "frontend.target_length": 64,
        "optim.optimizer": "adam", "optim.lr": 1e-3, "optim.warmup_steps": 10, "optim.schedule": "constant",
        "data.train": audio["train"], "data.valid": audio["valid"], "data.label_csv": audio["labels"],
        "data.freqm": 8, "data.timem": 8, "data.num_workers": 0,
        "run.out_dir": str(tmp_path), "run.batch_size": 8, "run.epochs": 12, "run.progress": False,
    })
    summary = finetune(config)
    chance = 1 / len(CLASSES)
    assert summary["valid"]["acc"] >= chance + 0.35, summary["valid"]


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.task.modules.state_dict().items()}


def _trainer(config):
    from ssamba.training.run import _dataset
    from ssamba.models import create_model
    from ssamba.objectives import MaskedPatchModeling
    from ssamba.training.tasks import PretrainTask

    torch.manual_seed(config.run.seed)
    encoder = create_model(config.model.preset, **config.model.options)
    objective = MaskedPatchModeling(config.objective, encoder.config.embed_dim, encoder.config.patch_size)
    train = _dataset(config.data.train, config, None)
    return Trainer(PretrainTask(encoder, objective), train, None, config.optim, config.run, config.to_dict())


@pytest.mark.slow
def test_resume_continues_exactly(audio, tmp_path):
    # 6 batches per pass: 8 steps cross a data-pass boundary; 2 micro-batches per step
    extra = {"run.epochs": 1, "run.steps_per_epoch": 8, "optim.grad_accum": 2, "optim.warmup_steps": 3,
             "run.save_every": 4, "model.options": {"drop_path_rate": 0.1}}
    straight = _trainer(pretrain_config(audio, tmp_path / "a", **extra))
    straight.fit()

    interrupted = _trainer(pretrain_config(audio, tmp_path / "b", **{**extra, "run.max_steps": 4}))
    interrupted.fit()
    assert interrupted.step == 4
    resumed = _trainer(pretrain_config(audio, tmp_path / "b", **extra))
    assert resumed.resume() and resumed.step == 4
    resumed.fit()

    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= 1e-6
    assert any((a[k] != _weights(interrupted)[k]).any() for k in a)  # training did continue


def test_too_many_bad_clips_stop_the_run(audio, tmp_path):
    import json

    entries = json.loads(open(audio["train"]).read())["data"]
    broken = [{"wav": str(tmp_path / f"missing_{i}.wav"), "labels": ""} for i in range(len(entries))]
    manifest = tmp_path / "broken.json"
    manifest.write_text(json.dumps({"data": entries[:8] + broken}))
    config = pretrain_config(audio, tmp_path / "run", **{"data.train": str(manifest), "data.valid": "",
                                                         "run.epochs": 1, "run.steps_per_epoch": 20})
    with pytest.warns(UserWarning, match="missing_"):
        with pytest.raises(RuntimeError, match="could not be used"):
            pretrain(config)


def test_geometry_and_config_errors(audio, tmp_path):
    with pytest.raises(TypeError, match="valid options"):
        pretrain_config(audio, tmp_path, **{"optim.learning_rate": 1.0})
    with pytest.raises(TypeError, match="embded_dim"):
        pretrain_config(audio, tmp_path, **{"model.options": {"embded_dim": 3}})
    with pytest.raises(ValueError, match="num_mel_bins"):
        pretrain_config(audio, tmp_path, **{"frontend.num_mel_bins": 80})
    with pytest.raises(ValueError, match="label_csv"):
        finetune(load_experiment(None, {"task": "finetune", "data.train": audio["train"],
                                        "run.out_dir": str(tmp_path)}))
    assert math.isfinite(1.0)


@pytest.mark.slow
def test_pretraining_streams_webdataset_shards_and_resumes(audio, tmp_path):
    from ssamba.data import write_shards

    shards = tmp_path / "shards"
    write_shards(audio["unlabeled"], shards, max_clips_per_shard=64)
    extra = {"data.train": str(shards), "data.valid": "", "run.epochs": 1, "run.steps_per_epoch": 6,
             "run.save_every": 3, "objective.num_masked": 8}
    straight = _trainer(pretrain_config(audio, tmp_path / "a", **extra))
    assert straight.streaming and straight.batches_per_pass == 256 // 8
    straight.fit()
    half = _trainer(pretrain_config(audio, tmp_path / "b", **{**extra, "run.max_steps": 3}))
    half.fit()
    resumed = _trainer(pretrain_config(audio, tmp_path / "b", **extra))
    assert resumed.resume() and resumed.step == 3
    resumed.fit()
    a, b = _weights(straight), _weights(resumed)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_trains_autocast_and_checkpoints_its_scaler(audio, tmp_path, precision, dtype):
    from ssamba.training.loop import autocast_dtype

    config = pretrain_config(audio, tmp_path, **{"run.epochs": 1, "run.steps_per_epoch": 4, "run.save_every": 4,
                                                 "run.precision": precision, "run.plot": False})
    trainer = _trainer(config)
    assert trainer.autocast_dtype == dtype == autocast_dtype(precision, torch.device("cpu"))
    seen = []
    for module in trainer.task.modules.modules():  # the objective's heads are called as modules
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    before = _weights(trainer)
    trainer.fit()
    assert seen and set(seen) == {dtype}  # the matmuls ran in the low precision
    after = _weights(trainer)
    assert all(v.dtype == before[k].dtype for k, v in after.items())  # the weights stay fp32
    assert any((after[k] != before[k]).any() for k in before)
    assert all(math.isfinite(row["train_loss"]) for row in trainer.history if "train_loss" in row)
    assert trainer.scaler.is_enabled() == (precision == "fp16")
    if precision == "fp16":
        from ssamba.training.checkpoint import load_checkpoint

        _, state = load_checkpoint(tmp_path / "checkpoints" / "step-00000004")
        assert float(state["grad_scaler"]["scale"]) == trainer.scaler.get_scale()
        resumed = _trainer(config)
        assert resumed.resume() and resumed.scaler.get_scale() == trainer.scaler.get_scale()


def test_precision_auto_is_bf16_on_cuda_and_fp32_on_cpu(audio, tmp_path):
    from ssamba.training.loop import autocast_dtype

    assert autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert autocast_dtype("fp32", torch.device("cuda")) is None
    with pytest.raises(ValueError, match="fp16"):
        pretrain_config(audio, tmp_path, **{"run.precision": "fp8"})


def test_a_new_run_refuses_a_folder_that_holds_one(audio, tmp_path, capsys):
    from ssamba.cli import main

    argv = ["pretrain", f"data.train={audio['unlabeled']}", "model.preset=ssamba_test", "frontend.target_length=64",
            "objective.num_masked=8", f"run.out_dir={tmp_path}", "run.epochs=1", "run.steps_per_epoch=2",
            "run.batch_size=4", "run.progress=false", "run.plot=false", "data.num_workers=0"]
    assert main(argv) == 0
    final = (tmp_path / "final" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a finished run" in err[0] and "--resume" in err[0], err
    assert (tmp_path / "final" / "model.safetensors").read_bytes() == final  # untouched
    assert main([*argv, "--resume", "--overwrite"]) == 2
    assert main([*argv, "run.seed=1", "--overwrite"]) == 0  # replaced: other weights
    assert (tmp_path / "final" / "model.safetensors").read_bytes() != final


def test_a_warm_up_longer_than_the_run_is_said(audio, tmp_path, caplog):
    import logging

    caplog.set_level(logging.WARNING)
    _trainer(pretrain_config(audio, tmp_path, **{"run.epochs": 1, "run.steps_per_epoch": 5,
                                                 "optim.warmup_steps": 50}))
    assert "optim.warmup_steps 50 is not shorter than the run's 5 steps" in caplog.text
    caplog.clear()
    _trainer(pretrain_config(audio, tmp_path, **{"run.epochs": 1, "run.steps_per_epoch": 60,
                                                 "optim.warmup_steps": 50}))
    assert "warmup" not in caplog.text
