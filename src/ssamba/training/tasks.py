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
        return self.objective(self.encoder, batch["spec"], generator, batch.get("batch_slice"))

    @torch.no_grad()
    def collect(self, batches: Iterable[dict], device: torch.device, seed: int = 0) -> tuple[dict[str, float], int]:
        """Clip-weighted sums of the objective's outputs, masks from a fixed seed."""
        totals: dict[str, float] = {}
        count = 0
        for batch in batches:
            size = batch["spec"].shape[0]
            if size == 0:
                continue
            generator = torch.Generator().manual_seed(seed + int(batch["index"][0]))
            out = self.step({"spec": batch["spec"].to(device)}, generator)
            for key, value in out.items():
                totals[key] = totals.get(key, 0.0) + value.item() * size
            count += size
        return totals, count

    @staticmethod
    def summarize(parts: list[tuple[dict[str, float], int]]) -> dict[str, float]:
        """Merge :meth:`collect` results (one per process) into averages."""
        count = sum(n for _, n in parts)
        keys = {k for totals, _ in parts for k in totals}
        return {k: sum(t.get(k, 0.0) for t, _ in parts) / count for k in sorted(keys)} if count else {}

    def evaluate(self, batches: Iterable[dict], device: torch.device, seed: int = 0) -> dict[str, float]:
        return self.summarize([self.collect(batches, device, seed)])


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
        if not scores:
            return torch.zeros(0, 0), torch.zeros(0, 0)
        return torch.cat(scores), torch.cat(targets)

    def collect(self, batches: Iterable[dict], device: torch.device, seed: int = 0) -> tuple[Tensor, Tensor]:
        return self.predict(batches, device)

    def summarize(self, parts: list[tuple[Tensor, Tensor]]) -> dict[str, float]:
        scores = torch.cat([s for s, _ in parts if s.numel()])
        targets = torch.cat([t for s, t in parts if s.numel()])
        return classification_metrics(scores, targets, multilabel=self.loss == "bce")

    def evaluate(self, batches: Iterable[dict], device: torch.device, seed: int = 0) -> dict[str, float]:
        return self.summarize([self.collect(batches, device, seed)])
