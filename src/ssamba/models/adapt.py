"""Carry pretrained encoder weights into a model of another geometry (fine-tuning).

The patch kernel is reused whatever the new stride; the patch part of the position
embedding is resampled from the source grid to the new one (centre-crop or bilinear,
see :func:`ssamba.layers.resample_pos_embed`); class-token rows are kept. Nothing is
hidden: the report lists what was resampled, what the model lacks, and what is left.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..layers import resample_pos_embed


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the source
    unexpected: list[str] = field(default_factory=list)  # in the source, not used
    mismatched: list[str] = field(default_factory=list)  # same name, incompatible shape

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors"]
        for name in ("resampled", "missing", "unexpected", "mismatched"):
            items = getattr(self, name)
            if items:
                parts.append(f"{name}: {', '.join(items)}")
        return "; ".join(parts)


def load_encoder_weights(model: nn.Module, source: nn.Module) -> LoadReport:
    """Copy ``source``'s weights into ``model`` (both ssamba encoders of one family)."""
    if type(model) is not type(source):
        raise TypeError(f"cannot load a {type(source).__name__} into a {type(model).__name__}")
    if model.num_prefix_tokens != source.num_prefix_tokens:
        raise ValueError(
            f"class tokens differ: source has {source.num_prefix_tokens}, model {model.num_prefix_tokens}"
        )
    report = LoadReport()
    target_state = model.state_dict()
    new_state = {}
    for name, tensor in source.state_dict().items():
        if name not in target_state:
            report.unexpected.append(name)
            continue
        if name == "pos_embed" and tensor.shape != target_state[name].shape:
            n = source.num_prefix_tokens
            patches = resample_pos_embed(tensor[:, n:], source.grid, model.grid)
            tensor = torch.cat([tensor[:, :n], patches], dim=1)
            report.resampled.append(f"pos_embed {source.grid} -> {model.grid}")
        if tensor.shape != target_state[name].shape:
            report.mismatched.append(f"{name} {tuple(tensor.shape)} vs {tuple(target_state[name].shape)}")
            continue
        new_state[name] = tensor
        report.loaded.append(name)
    report.missing = sorted(set(target_state) - set(new_state) - {m.split(" ")[0] for m in report.mismatched})
    model.load_state_dict(new_state, strict=False)
    return report
