import pytest
import torch

from ssamba.objectives import cluster_mask, random_mask


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
