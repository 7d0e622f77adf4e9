"""Library entry points behind ``ssamba pretrain``, ``ssamba finetune`` and ``ssamba evaluate``."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_write_text, strict_json
from ..data import ClipDataset, ClipDatasetConfig, LabelMap, read_label_csv
from ..models import create_model, load_model
from ..models.adapt import load_encoder_weights
from ..objectives import MaskedPatchModeling
from . import distributed
from .experiment import ExperimentConfig
from ..device import resolve_device
from .loop import Trainer
from .tasks import ClassificationTask, PretrainTask

log = logging.getLogger(__name__)


def _dataset(manifest: str, config: ExperimentConfig, label_map: LabelMap | None, augment: bool = False,
             shuffle: bool = False) -> ClipDataset:
    """A manifest JSON gives a :class:`ClipDataset`; a folder of WebDataset shards (or a
    ``.tar``) written by ``ssamba shard`` gives a streaming :class:`ShardDataset`.
    ``augment``: with ``config.data``'s augmentations (fine-tuning's training set);
    ``shuffle``: shards in a new order each epoch (manifests are shuffled by the trainer's
    sampler)."""
    from ..data import ShardDataset

    options = ClipDatasetConfig.for_experiment(config.data, config.frontend, config.run.seed, augment)
    if Path(manifest).is_dir() or str(manifest).endswith(".tar"):
        return ShardDataset(manifest, options, label_map, shuffle=shuffle)
    return ClipDataset(manifest, options, label_map)


def _label_map(config: ExperimentConfig) -> LabelMap:
    if not config.data.label_csv:
        raise ValueError("fine-tuning needs data.label_csv (index,mid,display_name)")
    return read_label_csv(config.data.label_csv)


def _join_world(config: ExperimentConfig) -> ExperimentConfig:
    """Under torchrun: join the process group; the config's device becomes this rank's."""
    import dataclasses

    _, device = distributed.setup(config.run.device)
    return dataclasses.replace(config, run=dataclasses.replace(config.run, device=device))


def _checked(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` with every field's type, choices and bounds checked (as for a recipe),
    also when it was built in Python: nothing starts with a batch size of -1."""
    from ..config import validate_config

    config = validate_config(config, "config")
    config.validate()
    return config


#: What a run writes into its folder: a new run must not mix with or silently replace them.
RUN_OUTPUTS = ("summary.json", "final", "checkpoints", "metrics.csv", "experiment.json", "curves.png", "tensorboard")


def _claim_run_folder(config: ExperimentConfig, resume: bool, overwrite: bool) -> None:
    """A new run (neither ``resume`` nor ``overwrite``) refuses a folder that holds a run;
    ``overwrite`` removes that run's outputs first."""
    out = Path(config.run.out_dir)
    found = [name for name in RUN_OUTPUTS if (out / name).exists()]
    if not found or resume:
        return
    if not overwrite:
        state = "finished" if (out / "summary.json").exists() else "started"
        raise FileExistsError(f"{out} holds a {state} run ({', '.join(found)}): pass --resume to continue it, "
                              "--overwrite to replace it, or another run.out_dir")
    if distributed.current().is_main:
        for name in found:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    distributed.barrier()


def _write_summary(config: ExperimentConfig, summary: dict[str, Any]) -> None:
    if not distributed.current().is_main:
        return
    out = Path(config.run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "experiment.json", strict_json(config.to_dict(), indent=2))
    atomic_write_text(out / "summary.json", strict_json(summary, indent=2))


def pretrain(config: ExperimentConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Self-supervised masked patch modeling on ``data.train`` (labels ignored).
    ``resume`` continues the run in ``run.out_dir``; a folder that holds a run is otherwise
    refused, unless ``overwrite`` (its outputs are removed first)."""
    config = _checked(config)
    if not config.data.train:
        raise ValueError("pretraining needs data.train (a manifest JSON)")
    config = _join_world(config)
    _claim_run_folder(config, resume, overwrite)
    torch.manual_seed(config.run.seed)
    # the front end is saved with every checkpoint (the model checks its mel bins)
    encoder = create_model(config.model.preset, frontend=config.frontend, **config.model.options)
    objective = MaskedPatchModeling(config.objective, encoder.config.embed_dim, encoder.config.patch_size)
    train = _dataset(config.data.train, config, None, augment=False, shuffle=True)  # no augmentation
    valid = _dataset(config.data.valid, config, None) if config.data.valid else None
    trainer = Trainer(PretrainTask(encoder, objective), train, valid, config.optim, config.run,
                      config.to_dict(), num_workers=config.data.num_workers,
                      max_bad_fraction=config.data.max_bad_fraction)
    if resume:
        trainer.resume()
    summary = trainer.fit()
    summary["history"] = trainer.history[-1:] if trainer.history else []
    _write_summary(config, summary)
    return summary


def build_finetune_model(config: ExperimentConfig, num_classes: int,
                         labels: dict | None = None) -> tuple[torch.nn.Module, str]:
    """The classifier, with pretrained encoder weights when ``model.init_from`` is set,
    its front end the recipe's and its classes ``labels`` (see
    :func:`ssamba.models.encoder_config.checked_labels`; saved with every checkpoint)."""
    options = {**config.model.options, "num_classes": num_classes}
    if config.model.init_from:
        from ..config import config_from_dict
        from ..models import get_config, model_from_config

        source = load_model(config.model.init_from)
        preset = type(get_config(config.model.preset))
        if type(source.config) is not preset:  # experiment.json must say what is trained
            raise ValueError(f"model.init_from {config.model.init_from} is a {type(source.config).__name__} model "
                             f"but model.preset {config.model.preset!r} is a {preset.__name__}: choose a preset "
                             "of the pretrained model's family")
        base = {k: v for k, v in vars(source.config).items() if k not in options}
        model = model_from_config(config_from_dict(type(source.config), {**base, **options}), config.frontend,
                                  labels)
        report = load_encoder_weights(model, source)
        if report.mismatched or not report.loaded:
            raise ValueError(f"model.init_from {config.model.init_from}: {len(report.mismatched)} of its tensors do not "
                             f"fit this model ({'; '.join(report.mismatched[:3]) or 'none loaded'}); model.options "
                             "must keep the pretrained encoder's geometry (embed_dim, depth, heads)")
        note = f"initialised from {config.model.init_from}: {report.summary()}"
    else:
        model = create_model(config.model.preset, frontend=config.frontend, labels=labels, **options)
        note = "trained from scratch"
    return model, note


def finetune(config: ExperimentConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Supervised fine-tuning (or training from scratch) on a labelled manifest.
    ``resume`` continues the run in ``run.out_dir``; a folder that holds a run is otherwise
    refused, unless ``overwrite`` (its outputs are removed first)."""
    config = _checked(config)
    if not config.data.train:
        raise ValueError("fine-tuning needs data.train (a manifest JSON)")
    config = _join_world(config)
    _claim_run_folder(config, resume, overwrite)
    torch.manual_seed(config.run.seed)
    labels = _label_map(config)
    model, note = build_finetune_model(config, labels.num_classes, {
        "ids": labels.ids, "names": labels.names, "multilabel": config.finetune.loss == "bce"})
    log.info(note)
    train = _dataset(config.data.train, config, labels, augment=True, shuffle=True)
    valid = _dataset(config.data.valid, config, labels) if config.data.valid else None
    task = ClassificationTask(model, config.finetune.loss, config.finetune.metric)
    trainer = Trainer(task, train, valid, config.optim, config.run, config.to_dict(),
                      num_workers=config.data.num_workers, max_bad_fraction=config.data.max_bad_fraction,
                      average_epochs=(config.finetune.average_from_epoch, config.finetune.average_to_epoch))
    if resume:
        trainer.resume()
    summary = trainer.fit()
    summary["init"] = note
    if valid is not None:
        summary["valid"] = trainer.evaluate(valid)
    if config.data.test:
        summary["test"] = trainer.evaluate(_dataset(config.data.test, config, labels))
    _write_summary(config, summary)
    return summary


def model_label_map(model, label_csv: str | None = None) -> LabelMap:
    """The classes of a fine-tuned ``model``: those it carries, or ``label_csv``'s (which
    must then agree with them where the model has its own); ``ValueError`` if neither."""
    own = LabelMap(model.labels["ids"], model.labels["names"]) if getattr(model, "labels", None) else None
    if label_csv:
        given = read_label_csv(label_csv)
        if own is not None and given.ids != own.ids:
            raise ValueError(f"the label CSV {label_csv} lists other classes than the model was trained with "
                             f"(e.g. {given.ids[:3]} vs {own.ids[:3]}); leave it out to use the model's")
        return given
    if own is None:
        raise ValueError("this model does not carry its class names (fine-tuned before they were saved): "
                         "give the label CSV it was trained with")
    return own


def evaluate(model_dir: str, manifest: str, label_csv: str | None = None, loss: str | None = None,
             batch_size: int = 32, device: str = "auto") -> dict[str, Any]:
    """Classification metrics of a saved fine-tuned model on a labelled manifest, with the
    front end and the classes the model was trained with (``label_csv`` for a model that
    does not carry its classes); ``loss`` (ce or bce) defaults to the model's own."""
    from torch.utils.data import DataLoader

    from ..data import collate_clips

    model = load_model(model_dir).to(resolve_device(device)).eval()
    if model.frontend_config is None:
        raise ValueError(f"{model_dir} carries no front-end config; it was not saved by a training run")
    config = ExperimentConfig(task="finetune", frontend=model.frontend_config)
    labels = model_label_map(model, label_csv)
    if loss is None:
        loss = "bce" if getattr(model, "labels", None) and model.labels["multilabel"] else "ce"
    if getattr(model, "head", None) is None or model.config.num_classes != labels.num_classes:
        raise ValueError(
            f"{model_dir} has {model.config.num_classes} classes, the label CSV {labels.num_classes}"
        )
    import warnings

    from ..data import BadClipWarning

    data = _dataset(manifest, config, labels)
    loader = DataLoader(data, batch_size=batch_size, collate_fn=collate_clips)
    task = ClassificationTask(model, loss)
    with warnings.catch_warnings(record=True) as caught:  # which clips could not be scored, and why
        warnings.simplefilter("always", BadClipWarning)
        metrics = task.evaluate(loader, torch.device(resolve_device(device)))
    skipped = [str(w.message) for w in caught if issubclass(w.category, BadClipWarning)]
    for w in caught:  # shown as they would have been
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    total = len(data)
    return {**metrics, "clips": total, "scored": total - len(skipped), "skipped": skipped}
