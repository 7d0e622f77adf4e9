"""What a training step computes: pretraining (masked patch modeling) or classification.

A task owns its modules (what the optimiser updates and the checkpoint saves), turns a
batch into a dict of scalars with ``"loss"``, and evaluates a data loader into metrics.
The loop knows nothing else about it.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..objectives import MaskedPatchModeling
from .metrics import classification_metrics

LOSSES = ("ce", "bce")


class PretrainTask:
    """Masked patch modeling of ``encoder`` with ``objective``; validation metric: ``acc``."""

    metric, maximize = "acc", True
    head_prefixes = ("objective.",)

    def __init__(self, encoder: nn.Module, objective: MaskedPatchModeling):
        self.encoder, self.objective = encoder, objective
        self.modules = nn.ModuleDict({"encoder": encoder, "objective": objective})

    def step(self, batch: dict, generator: torch.Generator) -> dict[str, Tensor]:
        return self.objective(self.encoder, batch["spec"], generator)

    @torch.no_grad()
    def evaluate(self, batches: Iterable[dict], device: torch.device, seed: int = 0) -> dict[str, float]:
        """Average objective outputs over the batches, with masks from a fixed seed."""
        generator = torch.Generator().manual_seed(seed)
        totals: dict[str, float] = {}
        count = 0
        for batch in batches:
            if batch["spec"].shape[0] == 0:
                continue
            out = self.step({"spec": batch["spec"].to(device)}, generator)
            size = batch["spec"].shape[0]
            for key, value in out.items():
                totals[key] = totals.get(key, 0.0) + value.item() * size
            count += size
        return {k: v / count for k, v in totals.items()} if count else {}


class ClassificationTask:
    """Supervised fine-tuning of an encoder built with ``num_classes``."""

    head_prefixes = ("encoder.head.",)

    def __init__(self, model: nn.Module, loss: str = "ce", metric: str = "acc"):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")
        if metric not in ("acc", "mAP", "AUC"):
            raise ValueError(f"unknown metric {metric!r}; choose acc, mAP or AUC")
        self.model, self.loss, self.metric, self.maximize = model, loss, metric, True
        self.modules = nn.ModuleDict({"encoder": model})

    def step(self, batch: dict, generator: torch.Generator) -> dict[str, Tensor]:
        logits = self.model(batch["spec"])
        target = batch["target"]
        if self.loss == "ce":  # the official code takes the argmax of (mixed) targets
            loss = F.cross_entropy(logits, target.argmax(dim=1))
        else:
            loss = F.binary_cross_entropy_with_logits(logits, target)
        acc = (logits.argmax(1) == target.argmax(1)).float().mean()
        return {"loss": loss, "acc": acc.detach()}

    @torch.no_grad()
    def predict(self, batches: Iterable[dict], device: torch.device) -> tuple[Tensor, Tensor]:
        """Scores (softmax for CE, sigmoid for BCE) and targets over all batches."""
        scores, targets = [], []
        for batch in batches:
            if batch["spec"].shape[0] == 0:
                continue
            logits = self.model(batch["spec"].to(device)).float().cpu()
            scores.append(logits.softmax(1) if self.loss == "ce" else logits.sigmoid())
            targets.append(batch["target"])
        return torch.cat(scores), torch.cat(targets)

    def evaluate(self, batches: Iterable[dict], device: torch.device, seed: int = 0) -> dict[str, float]:
        scores, targets = self.predict(batches, device)
        return classification_metrics(scores, targets, multilabel=self.loss == "bce")
