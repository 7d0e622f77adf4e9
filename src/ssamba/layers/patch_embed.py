"""Spectrogram patch embedding and learned position embeddings that follow the grid."""

from __future__ import annotations

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


def resample_pos_embed(
    pos_embed: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> Tensor:
    """Adapt patch position embeddings ``(1, F0*T0, D)`` to another grid ``(1, F1*T1, D)``.

    The SSAST/SSAMBA rule: along time, centre-crop when the new grid is shorter, else
    resize bilinearly; then along frequency the same (crop if fewer rows, else resize).
    Identity when the grids match. (The official code resizes time at a hard-coded 8
    frequency rows; that equals ``F0`` in every official geometry: 8 for 16x16 patches,
    and 1 for frame patches, where going through 8 identical rows and back is exact.)
    """
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if pos_embed.dim() != 3 or pos_embed.shape[1] != old_grid[0] * old_grid[1]:
        raise ValueError(
            f"pos_embed {tuple(pos_embed.shape)} does not hold a {old_grid[0]}x{old_grid[1]} grid"
        )
    if old_grid == new_grid:
        return pos_embed
    (f0, t0), (f1, t1) = old_grid, new_grid
    dim = pos_embed.shape[2]
    grid = pos_embed.transpose(1, 2).reshape(1, dim, f0, t0)
    if t1 < t0:
        start = t0 // 2 - t1 // 2
        grid = grid[:, :, :, start : start + t1]
    elif t1 > t0:
        grid = F.interpolate(grid, size=(f0, t1), mode="bilinear", align_corners=False)
    if f1 < f0:
        start = f0 // 2 - f1 // 2
        grid = grid[:, :, start : start + f1, :]
    elif f1 > f0:
        grid = F.interpolate(grid, size=(f1, t1), mode="bilinear", align_corners=False)
    return grid.reshape(1, dim, f1 * t1).transpose(1, 2).contiguous()
