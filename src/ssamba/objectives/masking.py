"""Which patches to hide: the official generator, a centred cluster design, random masking.

* :func:`official_mask` - the official code's ``gen_maskid_patch``, quirks included
  (top-left anchored blocks that spill into the next frequency row, never index 0,
  the ``num_masked`` smallest ids kept);
* :func:`cluster_mask` - blocks centred on their start patch, clipped at the grid's edges;
* :func:`random_mask` - a uniform sample (the official frame masking).

All are vectorised over the batch, driven by an explicit ``torch.Generator``, and mask
exactly ``num_masked`` patches of every clip.
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


def official_mask(batch: int, grid: tuple[int, int], num_masked: int, generator: torch.Generator,
                  cluster_sizes: tuple[int, ...] = (3, 4, 5), device: torch.device | str = "cpu",
                  chunk: int = 0) -> Tensor:
    """``(batch, F' * T')`` bool mask drawn as the official ``gen_maskid_patch`` draws it.

    Per clip: ``c`` from ``cluster_sizes``; then anchors uniform over all ``P`` positions,
    each adding the ids ``anchor + T' * i + j`` (``0 <= i, j < c``) that satisfy
    ``0 < id < P`` - no right-edge check, so a block near the end of a frequency row
    continues at the start of the next; blocks are cut at the end of the grid and index
    0 is never masked - until more than ``num_masked`` distinct ids exist; then the
    ``num_masked`` smallest are kept. At 400 of 512 the last id is therefore never
    masked and the first frequency row is masked far less than the middle rows.

    Random draws, in this order: ``c`` for every clip (one ``randint`` over the sizes),
    then anchors ``(batch, chunk)`` at a time until every clip has enough (see
    :func:`official_mask_from_anchors`, which does the rest).
    """
    rows, cols = grid
    num_patches = rows * cols
    if not 0 < num_masked <= num_patches - 2:
        # ids 1..P-1 are all the official loop can reach, and it stops only past num_masked
        raise ValueError(f"official masking can mask 1 to {num_patches - 2} of {num_patches} patches, "
                         f"not {num_masked}")
    sizes = torch.tensor(cluster_sizes)
    c = sizes[torch.randint(len(cluster_sizes), (batch,), generator=generator)]  # (B,)
    chunk = chunk or max(64, 4 * num_masked // int(sizes.min()) ** 2)
    anchors = torch.randint(num_patches, (batch, chunk), generator=generator)
    while True:
        mask = official_mask_from_anchors(c, anchors, grid, num_masked)
        if mask is not None:
            return mask.to(device)
        more = torch.randint(num_patches, (batch, chunk), generator=generator)
        anchors = torch.cat([anchors, more], dim=1)


def official_mask_from_anchors(c: Tensor, anchors: Tensor, grid: tuple[int, int], num_masked: int) -> Tensor | None:
    """The official mask for block sizes ``c`` ``(B,)`` and the anchor sequence ``anchors``
    ``(B, K)`` of every clip, or None when ``K`` anchors are too few for some clip.

    Vectorised: for every id, the index of the first anchor whose block covers it; the
    loop stops at the first anchor after which more than ``num_masked`` ids are covered.
    """
    rows, cols = grid
    num_patches = rows * cols
    batch, count = anchors.shape
    c_max = int(c.max())
    offsets = (torch.arange(c_max).view(-1, 1) * cols + torch.arange(c_max).view(1, -1)).view(-1)  # (c_max^2,)
    in_block = ((torch.arange(c_max).view(-1, 1) < c.view(-1, 1, 1)) &
                (torch.arange(c_max).view(1, -1) < c.view(-1, 1, 1))).view(batch, 1, -1)  # (B, 1, c_max^2)
    ids = anchors.unsqueeze(2) + offsets  # (B, K, c_max^2)
    valid = in_block & (ids > 0) & (ids < num_patches)
    order = torch.arange(count).view(1, -1, 1).expand_as(ids)
    first = torch.full((batch, num_patches + 1), count, dtype=torch.int64)  # column P collects the invalid
    first.scatter_reduce_(1, torch.where(valid, ids, num_patches).reshape(batch, -1),
                          order.reshape(batch, -1), reduce="amin")
    first = first[:, :num_patches]
    covered = torch.zeros(batch, count + 1, dtype=torch.int64).scatter_add_(1, first, torch.ones_like(first))
    covered = covered[:, :count].cumsum(1)  # (B, K) distinct ids after each anchor
    enough = covered > num_masked
    if not bool(enough.any(1).all()):
        return None
    stop = enough.int().argmax(1, keepdim=True)  # first anchor past num_masked
    chosen = first <= stop  # (B, P)
    return chosen & (chosen.cumsum(1) <= num_masked)  # the num_masked smallest ids


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
