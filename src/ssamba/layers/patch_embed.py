"""Spectrogram patch embedding and learned position embeddings that follow the grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def grid_shape(
    input_size: tuple[int, int], patch_size: tuple[int, int], patch_stride: tuple[int, int]
) -> tuple[int, int]:
    """Patch grid ``(F', T')`` of a ``(F, T)`` spectrogram; raises if no patch fits."""
    (f, t), (kf, kt), (sf, st) = input_size, patch_size, patch_stride
    if f < kf or t < kt:
        raise ValueError(
            f"spectrogram of {f} bins x {t} frames is smaller than one {kf}x{kt} patch"
        )
    return (f - kf) // sf + 1, (t - kt) // st + 1


class PatchEmbed(nn.Module):
    """``(B, T, F)`` spectrogram -> ``(B, F' * T', D)`` tokens, frequency-row first.

    A Conv2d over the ``(F, T)`` image with separate kernel (``patch_size``) and stride
    (``patch_stride``): 16x16 / 16 for patch pretraining, 16x16 / 10 for fine-tuning,
    128x2 for the frame model. Token index is ``f * T' + t``, lowest mel band first.
    """

    def __init__(
        self,
        embed_dim: int,
        patch_size: tuple[int, int] = (16, 16),
        patch_stride: tuple[int, int] = (16, 16),
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.patch_stride = tuple(patch_stride)
        self.proj = nn.Conv2d(
            1, embed_dim, self.patch_size, self.patch_stride, device=device, dtype=dtype
        )

    def grid(self, num_frames: int, num_bins: int) -> tuple[int, int]:
        return grid_shape((num_bins, num_frames), self.patch_size, self.patch_stride)

    def forward(self, spec: Tensor) -> Tensor:
        x = self.proj(spec.transpose(1, 2).unsqueeze(1))  # (B, D, F', T')
        return x.flatten(2).transpose(1, 2)  # (B, F' * T', D)


def time_resample_weights(t0: int, t1, device=None) -> tuple[Tensor, Tensor, Tensor]:
    """``(i0, i1, w)`` with ``new[:, j] = (1 - w[j]) old[:, i0[j]] + w[j] old[:, i1[j]]``:
    the time rule of :func:`resample_pos_embed` from ``t0`` columns to ``t1`` as one
    gather. Shorter: the centre crop (``w = 0``); longer: bilinear with
    ``align_corners=False`` (what ``F.interpolate`` computes). Written with tensor
    operations only, so a trace with a dynamic ``t1`` (``torch.export``, ONNX) keeps both
    rules and picks one at run time."""
    j = torch.arange(t1, device=device, dtype=torch.float32)
    n1 = torch.ones_like(j).sum()  # t1 as a tensor: no Python branch on a traced length
    shorter = n1 < t0
    src = ((j + 0.5) * (t0 / n1) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=t0 - 1)
    i1 = (i0 + 1).clamp(max=t0 - 1)
    crop = j.long() + (t0 // 2 - n1.long() // 2)
    w = torch.where(shorter, torch.zeros_like(src), src - i0)
    return torch.where(shorter, crop, i0), torch.where(shorter, crop, i1), w


def resample_pos_embed(
    pos_embed: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> Tensor:
    """Adapt patch position embeddings ``(1, F0*T0, D)`` to another grid ``(1, F1*T1, D)``.

    The SSAST/SSAMBA rule: along time, centre-crop when the new grid is shorter, else
    resize bilinearly (:func:`time_resample_weights`); then along frequency the same (crop
    if fewer rows, else resize). Identity when the grids match. (The official code resizes
    time at a hard-coded 8 frequency rows; that equals ``F0`` in every official geometry:
    8 for 16x16 patches, and 1 for frame patches, where going through 8 identical rows and
    back is exact.)
    """
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if pos_embed.dim() != 3 or pos_embed.shape[1] != old_grid[0] * old_grid[1]:
        raise ValueError(
            f"pos_embed {tuple(pos_embed.shape)} does not hold a {old_grid[0]}x{old_grid[1]} grid"
        )
    (f0, t0), (f1, t1) = old_grid, new_grid
    if f1 == f0 and not isinstance(t1, torch.SymInt) and t1 == t0:
        return pos_embed
    dim = pos_embed.shape[2]
    grid = pos_embed.transpose(1, 2).reshape(1, dim, f0, t0)
    i0, i1, w = time_resample_weights(t0, t1, pos_embed.device)
    grid = grid.index_select(3, i0) * (1 - w).to(grid.dtype) + grid.index_select(3, i1) * w.to(grid.dtype)
    if f1 < f0:
        start = f0 // 2 - f1 // 2
        grid = grid[:, :, start : start + f1, :]
    elif f1 > f0:
        grid = F.interpolate(grid, size=(f1, t1), mode="bilinear", align_corners=False)
    return grid.flatten(2).transpose(1, 2).contiguous()  # (1, F1*T1, D)
