import pytest
import torch

from ssamba.objectives import cluster_mask, official_mask, official_mask_from_anchors, random_mask


def _components(mask_2d: torch.Tensor) -> list[int]:
    """Sizes of the 4-connected components of a 2-D bool grid."""
    rows, cols = mask_2d.shape
    seen, sizes = set(), []
    for r in range(rows):
        for c in range(cols):
            if mask_2d[r, c] and (r, c) not in seen:
                stack, size = [(r, c)], 0
                seen.add((r, c))
                while stack:
                    y, x = stack.pop()
                    size += 1
                    for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                        if 0 <= ny < rows and 0 <= nx < cols and mask_2d[ny, nx] and (ny, nx) not in seen:
                            seen.add((ny, nx))
                            stack.append((ny, nx))
                sizes.append(size)
    return sizes


@pytest.mark.parametrize("num_masked", [1, 9, 250, 300, 400, 512])
def test_exactly_n_masked_per_clip(num_masked):
    g = torch.Generator().manual_seed(0)
    mask = cluster_mask(16, (8, 64), num_masked, g)
    assert mask.shape == (16, 512) and mask.dtype == torch.bool
    assert torch.all(mask.sum(1) == num_masked)
    assert torch.all(random_mask(16, 512, num_masked, g).sum(1) == num_masked)


def test_same_seed_same_mask_and_different_seed_different_mask():
    a = cluster_mask(4, (8, 64), 300, torch.Generator().manual_seed(7))
    b = cluster_mask(4, (8, 64), 300, torch.Generator().manual_seed(7))
    c = cluster_mask(4, (8, 64), 300, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # clips of a batch differ


def test_clusters_are_blocks():
    g = torch.Generator().manual_seed(0)
    for c in (3, 4, 5):
        # one block's worth far from full: every masked patch lies in a block of c x c
        mask = cluster_mask(32, (8, 64), 100, g, cluster_sizes=(c,))
        for row in mask:
            sizes = _components(row.view(8, 64))
            # blocks clipped by the grid edge are at least ceil(c/2) x ceil(c/2); only the
            # last, partial block may leave a smaller piece
            assert sum(s < (c + 1) // 2 * ((c + 1) // 2) for s in sizes) <= 1
            assert sum(sizes) / len(sizes) >= c * c / 2


def test_random_masking_is_not_clustered():
    g = torch.Generator().manual_seed(0)
    mask = random_mask(8, 512, 100, g)
    mean_size = sum(sum(_components(m.view(8, 64))) / len(_components(m.view(8, 64))) for m in mask) / 8
    assert mean_size < 3  # scattered patches


def test_bad_counts():
    g = torch.Generator()
    with pytest.raises(ValueError, match="cannot mask"):
        cluster_mask(1, (8, 64), 513, g)
    with pytest.raises(ValueError, match="cannot mask"):
        random_mask(1, 512, 0, g)


# -- the official generator ---------------------------------------------------------------

def official_loop(c: int, anchors: list[int], cols: int, num_patches: int, num_masked: int) -> list[int]:
    """``gen_maskid_patch`` as the official code writes it, fed a given anchor sequence."""
    mask_id, draws = [], iter(anchors)
    while len(set(mask_id)) <= num_masked:
        start = next(draws)
        for i in range(c):
            for j in range(c):
                cand = start + cols * i + j
                if 0 < cand < num_patches:
                    mask_id.append(cand)
    return sorted(set(mask_id))[:num_masked]


@pytest.mark.parametrize("grid,num_masked", [((8, 64), 400), ((8, 64), 250), ((8, 64), 1), ((4, 12), 40), ((3, 5), 13)])
def test_official_mask_equals_the_sequential_loop_on_the_same_draws(grid, num_masked):
    g = torch.Generator().manual_seed(3)
    batch, num_patches = 24, grid[0] * grid[1]
    c = torch.tensor([3, 4, 5])[torch.randint(3, (batch,), generator=g)]
    anchors = torch.randint(num_patches, (batch, 4000), generator=g)
    mask = official_mask_from_anchors(c, anchors, grid, num_masked)
    for b in range(batch):
        want = official_loop(int(c[b]), anchors[b].tolist(), grid[1], num_patches, num_masked)
        assert mask[b].nonzero().flatten().tolist() == want


def test_official_mask_draws_more_anchors_when_a_chunk_is_short():
    # a chunk of 2 anchors is never enough for 400 patches: the loop must keep drawing,
    # and the result is the one the whole anchor stream gives at once
    g = torch.Generator().manual_seed(5)
    mask = official_mask(6, (8, 64), 400, g, chunk=2)
    g = torch.Generator().manual_seed(5)
    c = torch.tensor([3, 4, 5])[torch.randint(3, (6,), generator=g)]
    stream = torch.cat([torch.randint(512, (6, 2), generator=g) for _ in range(2000)], dim=1)
    assert torch.equal(mask, official_mask_from_anchors(c, stream, (8, 64), 400))
    assert official_mask_from_anchors(c, stream[:, :2], (8, 64), 400) is None


def test_official_mask_signature():
    """At 400 of 512: index 0 and the last index are never masked; the first frequency row
    is masked about 42% of the time, the middle rows about 88%."""
    mask = official_mask(2000, (8, 64), 400, torch.Generator().manual_seed(0)).float()
    assert torch.all(mask.sum(1) == 400)
    assert mask[:, 0].sum() == 0 and mask[:, -1].sum() == 0
    per_row = mask.view(-1, 8, 64).mean((0, 2))
    assert 0.36 < per_row[0] < 0.48
    assert torch.all((per_row[3:5] > 0.82) & (per_row[3:5] < 0.94))
    assert per_row[0] < per_row[1] < per_row[2] < per_row[3]
    # blocks spill over the right edge: a block anchored at the end of a row continues at
    # the start of the next, so masked runs cross rows (never the case for clipped blocks)
    rows = mask.view(-1, 8, 64)
    assert (rows[:, 3, -1] * rows[:, 4, 0]).mean() > 0.5


def test_official_mask_is_seeded_and_checks_its_count():
    a = official_mask(4, (8, 64), 300, torch.Generator().manual_seed(7))
    assert torch.equal(a, official_mask(4, (8, 64), 300, torch.Generator().manual_seed(7)))
    assert not torch.equal(a, official_mask(4, (8, 64), 300, torch.Generator().manual_seed(8)))
    with pytest.raises(ValueError, match="official masking can mask 1 to 510"):
        official_mask(1, (8, 64), 511, torch.Generator())  # the official loop would never end


# -- the cluster and random generators against their sequential definitions ------------------

def cluster_loop(c: int, starts: list[int], grid: tuple[int, int], num_masked: int) -> list[int]:
    """Cluster masking as a loop: blocks of c x c centred on each start in turn, clipped
    at the grid's edges, their cells in row-major order, until num_masked are masked."""
    rows, cols = grid
    masked: list[int] = []
    for start in starts:
        r0, t0 = divmod(start, cols)
        for i in range(c):
            for j in range(c):
                r, t = r0 + i - c // 2, t0 + j - c // 2
                if 0 <= r < rows and 0 <= t < cols and r * cols + t not in masked:
                    masked.append(r * cols + t)
                    if len(masked) == num_masked:
                        return sorted(masked)
    return sorted(masked)


@pytest.mark.parametrize("grid,num_masked", [((8, 64), 400), ((8, 64), 9), ((4, 12), 48), ((3, 5), 7), ((1, 6), 4)])
def test_cluster_mask_equals_the_sequential_loop_on_the_same_draws(grid, num_masked):
    batch, num_patches = 12, grid[0] * grid[1]
    mask = cluster_mask(batch, grid, num_masked, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # the same draws, in cluster_mask's order
    c = torch.tensor([3, 4, 5])[torch.randint(3, (batch,), generator=g)]
    starts = torch.rand(batch, num_patches, generator=g).argsort(1)  # start patches, first to last
    for b in range(batch):
        want = cluster_loop(int(c[b]), starts[b].tolist(), grid, num_masked)
        assert mask[b].nonzero().flatten().tolist() == want, b


@pytest.mark.parametrize("num_patches,num_masked", [(512, 400), (10, 1), (10, 10)])
def test_random_mask_equals_the_sequential_draw(num_patches, num_masked):
    # one patch at a time, in the order of the clip's uniform noise (a random permutation)
    batch = 6
    mask = random_mask(batch, num_patches, num_masked, torch.Generator().manual_seed(2))
    noise = torch.rand(batch, num_patches, generator=torch.Generator().manual_seed(2))
    for b in range(batch):
        order = sorted(range(num_patches), key=lambda p: float(noise[b, p]))
        assert mask[b].nonzero().flatten().tolist() == sorted(order[:num_masked])
