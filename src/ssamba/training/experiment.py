"""The experiment config: every option of a pretraining or fine-tuning run, in sections.

Recipes are YAML files of these sections (``configs/``); any value can be overridden as
``section.key=value`` on the command line. Unknown keys are errors listing valid ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import (
    ConfigError,
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    option,
)
from ..data.dataset import AugmentOptions
from ..frontend import FrontendConfig
from ..objectives import PatchModelingConfig
from .optim import OptimConfig


@dataclass
class ModelSection:
    preset: str = option("ssamba_tiny", 'a name from `ssamba models`')
    options: dict[str, Any] = field(default_factory=dict,
                                    metadata={"help": 'preset overrides, e.g. {patch_stride: [10, 10]}'})
    init_from: str = option("", 'checkpoint or model directory whose encoder weights start fine-tuning')


@dataclass
class DataSection(AugmentOptions):
    train: str = option("", 'manifest JSON of the training clips, or a folder of shards (ssamba shard)')
    valid: str = option("", "manifest JSON evaluated after every epoch ('' = none)")
    test: str = option("", "manifest JSON evaluated once at the end ('' = none)")
    label_csv: str = option("", 'label CSV (index,mid,display_name); fine-tuning only')
    max_bad_fraction: Fraction = option(0.05, 'fail the run when more clips than this share are unusable (0 <= f < 1)')
    num_workers: NonNegativeInt = option(2, 'DataLoader worker processes (each uses one torch thread)')


@dataclass
class FinetuneSection:
    loss: Literal["ce", "bce"] = option("ce", '"ce" (single label) or "bce" (multi-label)')
    metric: Literal["acc", "mAP", "AUC"] = option("acc",
                                                  'validation metric for the schedule and the report: acc, mAP or AUC')
    average_from_epoch: NonNegativeInt = option(0, 'average the weights of epochs [from, to] (AS-20K: 12..40); 0 = off')
    average_to_epoch: NonNegativeInt = option(0, 'last epoch of the weight average')


@dataclass
class RunSection:
    out_dir: str = option("runs/experiment", 'checkpoints, metrics.csv, curves.png, final model')
    epochs: PositiveInt = option(10, 'evaluation periods')
    steps_per_epoch: NonNegativeInt = option(0, 'optimiser steps per period; 0 = one pass over the training set')
    max_steps: NonNegativeInt = option(0, 'stop after this many optimiser steps in total; 0 = no limit')
    max_seconds: NonNegativeFloat = option(0.0, 'stop after this much training time (this process); 0 = no limit')
    batch_size: PositiveInt = option(64, 'clips per micro-batch (x optim.grad_accum per step)')
    seed: int = option(0, 'fixes data order, augmentation, masks, dropout')
    device: str = option("auto", '"auto" (cuda if available), "cpu", "cuda", "cuda:1", ...')
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option("auto",
                                                                'training autocast; auto: bf16 on CUDA, fp32 on CPU; '
                                                                'fp16 adds a gradient scaler')
    save_every: PositiveInt = option(1000, "optimiser steps between checkpoints (also at each epoch's end)")
    keep_checkpoints: PositiveInt = option(2, 'newest checkpoints kept on disk')
    log_every: PositiveInt = option(10, 'optimiser steps between rows of metrics.csv')
    progress: bool = option(True, 'a progress bar on a terminal; in a log, a line every print_every steps')
    print_every: PositiveInt = option(50, 'optimiser steps between progress lines when not on a terminal')
    plot: bool = option(True, 'draw curves.png (loss and metrics against steps) at the end')


@dataclass
class ExperimentConfig:
    task: Literal["pretrain", "finetune"] = option("pretrain", '"pretrain" or "finetune"')
    model: ModelSection = field(default_factory=ModelSection)
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    data: DataSection = field(default_factory=DataSection)
    objective: PatchModelingConfig = field(default_factory=PatchModelingConfig)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunSection = field(default_factory=RunSection)

    def __post_init__(self) -> None:
        if self.task not in ("pretrain", "finetune"):
            raise ValueError(f"task must be 'pretrain' or 'finetune', got {self.task!r}")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    def validate(self) -> None:
        """Check what the field types cannot: the model options against the preset, that
        the front end feeds the model the number of mel bins it expects, and the device."""
        import torch

        from ..device import resolve_device
        from ..models import get_config

        if self.run.device != "auto":
            try:
                torch.device(self.run.device)
            except (RuntimeError, ValueError):
                raise ConfigError(
                    f"run.device {self.run.device!r} is not a device; use auto, cpu, cuda or cuda:N"
                ) from None
            try:
                resolve_device(self.run.device)
            except ValueError as err:
                raise ConfigError(f"run.device: {err}") from None

        model = get_config(self.model.preset, **self.model.options)
        if model.input_fdim != self.frontend.num_mel_bins:
            raise ValueError(
                f"model.options.input_fdim {model.input_fdim} != frontend.num_mel_bins "
                f"{self.frontend.num_mel_bins}"
            )


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=3e-4", "run.out_dir=x"]`` -> ``{"optim.lr": 0.0003, ...}`` (values as YAML)."""
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err)
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem}); quote it") from None
    return out


def load_experiment(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                    **sections: Any) -> ExperimentConfig:
    """Read a YAML recipe (or start from defaults), apply overrides, validate."""
    import yaml

    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} not found")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path} is not a valid YAML recipe: {' '.join(str(err).split())}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a recipe is a mapping of sections, got {type(loaded).__name__}")
        values = loaded
    values = apply_overrides(values, {**(overrides or {}), **sections})
    config = config_from_dict(ExperimentConfig, values, "config")
    config.validate()
    return config
