"""Which patches to hide: cluster masking for patch models, random masking for frames.

Both are vectorised over the batch and driven by an explicit ``torch.Generator``, and
both mask exactly ``num_masked`` patches of every clip.
"""

from __future__ import annotations

import torch
from torch import Tensor


def random_mask(batch: int, num_patches: int, num_masked: int, generator: torch.Generator,
                device: torch.device | str = "cpu") -> Tensor:
    """``(batch, num_patches)`` bool mask with ``num_masked`` uniformly chosen patches per row."""
    _check_count(num_masked, num_patches)
    noise = torch.rand(batch, num_patches, generator=generator)
    chosen = noise.argsort(dim=1)[:, :num_masked]
    mask = torch.zeros(batch, num_patches, dtype=torch.bool)
    mask.scatter_(1, chosen, True)
    return mask.to(device)


def cluster_mask(batch: int, grid: tuple[int, int], num_masked: int, generator: torch.Generator,
                 cluster_sizes: tuple[int, ...] = (3, 4, 5), device: torch.device | str = "cpu") -> Tensor:
    """``(batch, F' * T')`` bool mask made of ``c x c`` blocks of patches (SSAST's cluster masking).

    Per clip, ``c`` is drawn from ``cluster_sizes``; blocks centred on random start
    patches (clipped at the grid's edges) are masked one after another until exactly
    ``num_masked`` patches are masked; the last block is cut short in row-major order.

    Vectorised: every patch is a start once, in a random order. A patch is masked at the
    "time" of the first block in that order that covers it (ties within a block broken
    row-major), and the ``num_masked`` earliest patches are kept - the same set the
    sequential loop produces.
    """
    rows, cols = grid
    num_patches = rows * cols
    _check_count(num_masked, num_patches)
    sizes = torch.tensor(cluster_sizes)
    c = sizes[torch.randint(len(cluster_sizes), (batch,), generator=generator)]  # (B,)
    order = torch.rand(batch, num_patches, generator=generator).argsort(1).argsort(1)  # rank of each start
    order = order.view(batch, rows, cols)

    c_max = int(sizes.max())
    slots = c_max * c_max
    never = torch.iinfo(torch.int64).max
    first = torch.full((batch, rows, cols), never, dtype=torch.int64)
    for i in range(c_max):
        for j in range(c_max):
            # block offsets (i, j) - c // 2: the start patch sits at the block's centre
            active = (i < c) & (j < c)  # (B,) this offset exists for clips whose c is big enough
            di = i - c // 2  # (B,) row offset of this cell from the start
            dj = j - c // 2
            key = order * slots + (i * c_max + j)  # block rank first, then row-major cell
            shifted = _shift(key, di, dj, never)  # the key of the block whose cell lands here
            shifted = torch.where(active.view(batch, 1, 1), shifted, never)
            first = torch.minimum(first, shifted)
    kept = first.view(batch, num_patches).argsort(dim=1)[:, :num_masked]
    mask = torch.zeros(batch, num_patches, dtype=torch.bool)
    mask.scatter_(1, kept, True)
    return mask.to(device)


def _shift(grid: Tensor, di: Tensor, dj: Tensor, fill: int) -> Tensor:
    """``out[b, r, t] = grid[b, r - di[b], t - dj[b]]`` (``fill`` outside the grid)."""
    batch, rows, cols = grid.shape
    r = torch.arange(rows).view(1, rows, 1) - di.view(-1, 1, 1)
    t = torch.arange(cols).view(1, 1, cols) - dj.view(-1, 1, 1)
    inside = (r >= 0) & (r < rows) & (t >= 0) & (t < cols)
    flat = (r.clamp(0, rows - 1) * cols + t.clamp(0, cols - 1)).expand(batch, rows, cols)
    values = grid.view(batch, -1).gather(1, flat.reshape(batch, -1)).view(batch, rows, cols)
    return torch.where(inside, values, fill)


def _check_count(num_masked: int, num_patches: int) -> None:
    if not 0 < num_masked <= num_patches:
        raise ValueError(f"cannot mask {num_masked} of {num_patches} patches")
