"""Masked spectrogram patch modeling (SSAST / SSAMBA pretraining).

Hide ``num_masked`` patches, encode, and from the encoder's outputs at the hidden
positions (1) pick each hidden patch among the clip's other hidden patches (InfoNCE,
discriminative) and (2) reconstruct it (MSE, generative). Joint loss
``nce + mse_weight * mse``.

Official behaviours kept as options:

* ``nce_softmax="official"`` normalises each target's scores over the predictions
  (the code's ``lsoftmax`` over the last axis of ``target @ pred^T``); ``"paper"``
  normalises each prediction's scores over the targets, as the paper's equation reads.
  Accuracy is "prediction picks its own target" in both.
* ``nce_accuracy="official"``: the masked-patch accuracy of the official code - each
  target's scores are first normalised with a softmax over the predictions, then each
  prediction counts as correct when its own target has the largest normalised score;
  ``"raw"`` takes the argmax of the raw scores instead (a stricter count).
* ``masking="official"``: the official mask generator (:func:`official_mask`) for patch
  models, a uniform sample for frame models (one frequency row of tokens).
* ``use_separate_passes=True``: the two losses come from two forward passes with
  independently drawn masks, as the official joint training does; ``False`` uses one
  pass and one mask for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import NonNegativeFloat, PositiveInt, option
from .masking import cluster_mask, official_mask, random_mask

NceSoftmax = Literal["official", "paper"]
NceAccuracy = Literal["official", "raw"]
Masking = Literal["official", "cluster", "random", "auto"]
NCE_SOFTMAX, NCE_ACCURACY, MASKINGS = get_args(NceSoftmax), get_args(NceAccuracy), get_args(Masking)


@dataclass
class PatchModelingConfig:
    """Options of :class:`MaskedPatchModeling`; defaults are the official recipe."""

    num_masked: PositiveInt = option(400, 'patches hidden per clip (250 / 300 / 400 of 512)')
    masking: Masking = option("official", '"official" (the research code\'s: blocks for patches, uniform for '
                                          'frames), "cluster", "random" or "auto"')
    cluster_sizes: tuple[PositiveInt, ...] = option((3, 4, 5), 'c of the c x c blocks, drawn per clip')
    mse_weight: NonNegativeFloat = option(10.0, 'L = nce + mse_weight * mse')
    nce_softmax: NceSoftmax = option("official", 'axis of the InfoNCE softmax: "official" or "paper"')
    nce_accuracy: NceAccuracy = option("official", 'masked-patch accuracy: "official" (normalised scores) or "raw"')
    use_separate_passes: bool = option(True, 'quirk: nce and mse from two passes with independent masks')
    use_nce: bool = option(True, 'discriminative objective on')
    use_mse: bool = option(True, 'generative objective on')


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {choices}")


def patchify(spec: Tensor, patch_size: tuple[int, int]) -> Tensor:
    """``(B, T, F)`` -> ``(B, P, kf * kt)`` non-overlapping patches in token order (f * T' + t)."""
    image = spec.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T)
    return F.unfold(image, kernel_size=patch_size, stride=patch_size).transpose(1, 2)


def info_nce(pred: Tensor, target: Tensor, softmax: str = "official",
             accuracy: str = "official") -> tuple[Tensor, Tensor]:
    """InfoNCE over the masked patches of each clip; returns ``(loss, accuracy)``.

    ``pred``, ``target``: ``(B, N, K)``. Scores ``S[b, j, k] = <target_j, pred_k>`` (no
    temperature, no normalisation). Accuracy, the share of predictions ``k`` whose own
    target ``k`` wins the argmax over targets of: ``"official"`` ``softmax(S, dim=-1)``
    (each target's scores normalised over the predictions first), ``"raw"`` ``S`` itself.
    """
    _check_choice("nce_softmax", softmax, NCE_SOFTMAX)
    _check_choice("nce_accuracy", accuracy, NCE_ACCURACY)
    with torch.autocast(pred.device.type, enabled=False):  # scores and softmax in fp32 under autocast
        scores = target.float() @ pred.float().transpose(1, 2)  # (B, N_target, N_pred)
    log_probs = scores.log_softmax(dim=2 if softmax == "official" else 1)
    loss = -log_probs.diagonal(dim1=1, dim2=2).mean()
    own = torch.arange(scores.shape[1], device=scores.device)
    judged = scores.detach().softmax(dim=2) if accuracy == "official" else scores.detach()
    return loss, (judged.argmax(dim=1) == own).float().mean()


class PredictionHead(nn.Sequential):
    """``Linear(D, D) -> ReLU -> Linear(D, K)``."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out_dim))


class MaskedPatchModeling(nn.Module):
    """The pretraining objective; owns masking and the two prediction heads.

    ``objective(encoder, spec, generator)`` returns a dict of scalars: ``loss``, and
    ``nce``, ``acc`` and ``mse`` for the parts that are on. The encoder only ever sees
    a spectrogram and a mask.
    """

    def __init__(self, config: PatchModelingConfig, embed_dim: int, patch_size: tuple[int, int]):
        super().__init__()
        if not (config.use_nce or config.use_mse):
            raise ValueError("at least one of use_nce and use_mse must be on")
        _check_choice("masking", config.masking, MASKINGS)
        _check_choice("nce_softmax", config.nce_softmax, NCE_SOFTMAX)
        _check_choice("nce_accuracy", config.nce_accuracy, NCE_ACCURACY)
        self.config = config
        self.patch_size = tuple(patch_size)
        values = self.patch_size[0] * self.patch_size[1]
        self.nce_head = PredictionHead(embed_dim, values) if config.use_nce else None
        self.mse_head = PredictionHead(embed_dim, values) if config.use_mse else None
        square = self.patch_size[0] == self.patch_size[1]
        self.use_cluster = config.masking == "cluster" or (config.masking == "auto" and square)

    def draw_mask(self, batch: int, grid: tuple[int, int], generator: torch.Generator,
                  device: torch.device, batch_slice: tuple[int, int] | None = None) -> Tensor:
        """Masks for ``batch`` clips; with ``batch_slice = (start, total)`` (this process's
        clips are ``start:start + batch`` of a global batch of ``total``) the masks are
        those rows of a draw for ``total`` clips, so that a batch split over processes gets
        the masks the whole batch would get in one process."""
        start, total = batch_slice if batch_slice is not None else (0, batch)
        n = self.config.num_masked
        if self.config.masking == "official" and grid[0] > 1:  # patches (frames: one row, uniform)
            mask = official_mask(total, grid, n, generator, self.config.cluster_sizes, device)
        elif self.use_cluster:
            mask = cluster_mask(total, grid, n, generator, self.config.cluster_sizes, device)
        else:
            mask = random_mask(total, grid[0] * grid[1], n, generator, device)
        return mask[start:start + batch]

    def masked_outputs(self, encoder: nn.Module, spec: Tensor, mask: Tensor) -> Tensor:
        """Encoder outputs at the masked positions, ``(B, N, D)`` in token order."""
        tokens = encoder.forward_features(spec, mask)[:, encoder.num_prefix_tokens:]
        return tokens[mask].view(spec.shape[0], self.config.num_masked, -1)

    def forward(self, encoder: nn.Module, spec: Tensor, generator: torch.Generator,
                batch_slice: tuple[int, int] | None = None) -> dict[str, Tensor]:
        if tuple(encoder.config.patch_stride) != self.patch_size:
            raise ValueError(
                f"pretraining needs non-overlapping patches: stride {encoder.config.patch_stride} "
                f"!= patch size {self.patch_size}"
            )
        grid = encoder.patch_grid(spec.shape[1])
        targets = patchify(spec, self.patch_size)  # (B, P, K)
        batch = spec.shape[0]
        c = self.config
        out: dict[str, Tensor] = {}
        mask = self.draw_mask(batch, grid, generator, spec.device, batch_slice)
        hidden = self.masked_outputs(encoder, spec, mask)
        loss = spec.new_zeros(())
        if c.use_nce:
            target = targets[mask].view(batch, c.num_masked, -1)
            out["nce"], out["acc"] = info_nce(self.nce_head(hidden), target, c.nce_softmax, c.nce_accuracy)
            loss = loss + out["nce"]
        if c.use_mse:
            if c.use_nce and c.use_separate_passes:
                mask = self.draw_mask(batch, grid, generator, spec.device, batch_slice)
                hidden = self.masked_outputs(encoder, spec, mask)
            target = targets[mask].view(batch, c.num_masked, -1)
            out["mse"] = F.mse_loss(self.mse_head(hidden).float(), target.float())  # fp32 under autocast
            loss = loss + c.mse_weight * out["mse"]
        out["loss"] = loss
        return out
