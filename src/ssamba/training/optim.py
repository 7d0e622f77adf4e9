"""Optimiser with parameter groups, and a learning-rate schedule with plain, resumable state.

Schedule = linear warm-up over the first ``warmup_steps`` optimiser steps, times a
decay factor that changes once per evaluation period ("epoch"): halved on a plateau
of the validation metric (SSAMBA pretraining), or multiplied by ``decay_gamma`` every
``decay_every`` epochs from ``decay_start`` (the fine-tuning recipes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn

from ..config import Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, option

OptimizerName = Literal["adamw", "adam"]
Schedule = Literal["plateau", "step", "constant"]
OPTIMIZERS, SCHEDULES = get_args(OptimizerName), get_args(Schedule)


@dataclass
class OptimConfig:
    """Optimiser and schedule; defaults are SSAMBA's pretraining recipe."""

    optimizer: OptimizerName = option("adamw", '"adamw" or "adam" (Adam\'s weight decay is L2, as in SSAST)')
    lr: PositiveFloat = option(1e-4, 'peak learning rate (after warm-up)')
    weight_decay: NonNegativeFloat = option(5e-8, 'not applied to tagged parameters (A_log, D, positions, tokens)')
    betas: tuple[Fraction, Fraction] = option((0.95, 0.999), "Adam's moment decay rates (beta1, beta2)")
    head_lr_multiplier: PositiveFloat = option(1.0, 'lr of the classifier head relative to lr (AS-20K: 3)')
    warmup_steps: NonNegativeInt = option(1000, 'linear warm-up, in optimiser steps')
    schedule: Schedule = option("plateau", '"plateau", "step" or "constant"')
    plateau_factor: PositiveFloat = option(0.5,
                                           'plateau: lr *= factor after `plateau_patience` epochs without improvement')
    plateau_patience: NonNegativeInt = option(2, 'plateau: epochs without improvement tolerated')
    decay_start: NonNegativeInt = option(5, 'step: lr first decays after this epoch')
    decay_every: PositiveInt = option(1, 'step: decay again every this many epochs')
    decay_gamma: PositiveFloat = option(0.85, 'step: factor per decay')
    grad_clip: NonNegativeFloat = option(0.0, 'max gradient norm; 0 = off')
    grad_accum: PositiveInt = option(1, 'micro-batches per optimiser step')


def build_optimizer(model: nn.Module, config: OptimConfig, head_prefixes: tuple[str, ...] = ()) -> torch.optim.Optimizer:
    """Groups: decayed / not decayed (parameters tagged ``_no_weight_decay``), each split
    into body and head (names starting with ``head_prefixes``, at ``head_lr_multiplier``)."""
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; choose one of {OPTIMIZERS}")
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_head = name.startswith(head_prefixes) if head_prefixes else False
        decays = not getattr(param, "_no_weight_decay", False)
        groups.setdefault((is_head, decays), []).append(param)
    param_groups = [
        {
            "params": params,
            "weight_decay": config.weight_decay if decays else 0.0,
            "lr": config.lr * (config.head_lr_multiplier if is_head else 1.0),
            "name": f"{'head' if is_head else 'body'}{'' if decays else '_no_decay'}",
        }
        for (is_head, decays), params in sorted(groups.items())
    ]
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return fused_where_possible(cls, param_groups, lr=config.lr, betas=tuple(config.betas))


def fused_where_possible(cls: type[torch.optim.Optimizer], params, **kwargs) -> torch.optim.Optimizer:
    """``cls(params, **kwargs)`` (Adam or AdamW) with PyTorch's fused implementation where
    it runs (CPU and CUDA parameters), else its default one.

    On a CPU the default updates one parameter tensor at a time, about ten operations
    each (ssamba_tiny has 439 tensors); the fused kernel updates them all in one call
    (``Optimizer.step`` in ``lab/step_profile.py``). The two compute the same update
    up to float rounding (``tests/training/test_optim.py``)."""
    params = list(params)
    try:
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, ValueError, TypeError):  # a device or dtype the fused kernel lacks
        return cls(params, **kwargs)


class LRSchedule:
    """Sets each group's lr to ``base_lr * warmup(step) * decay``; state is JSON-ready."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: OptimConfig, maximize: bool = True):
        if config.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {config.schedule!r}; choose one of {SCHEDULES}")
        self.optimizer, self.config, self.maximize = optimizer, config, maximize
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.decay = 1.0
        self.best: float | None = None
        self.bad_epochs = 0
        self.apply(0)

    def warmup(self, step: int) -> float:
        w = self.config.warmup_steps
        return min(1.0, (step + 1) / w) if w > 0 else 1.0

    def apply(self, step: int) -> None:
        """Set the learning rates for optimiser step ``step`` (0-based)."""
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * self.warmup(step) * self.decay

    def end_epoch(self, epoch: int, metric: float | None = None) -> None:
        """Update the decay after evaluation period ``epoch`` (1-based) with its metric."""
        c = self.config
        if c.schedule == "plateau" and metric is not None:
            better = self.best is None or (metric > self.best if self.maximize else metric < self.best)
            if better:
                self.best, self.bad_epochs = metric, 0
            else:
                self.bad_epochs += 1
                if self.bad_epochs > c.plateau_patience:
                    self.decay *= c.plateau_factor
                    self.bad_epochs = 0
        elif c.schedule == "step":  # torch's MultiStepLR(range(start, inf, every)) stepped per epoch
            if epoch >= c.decay_start and (epoch - c.decay_start) % c.decay_every == 0:
                self.decay *= c.decay_gamma

    def state_dict(self) -> dict:
        return {"decay": self.decay, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.best, self.bad_epochs = state["decay"], state["best"], state["bad_epochs"]
