import pytest
import torch

from ssamba.layers import PatchEmbed, grid_shape, resample_pos_embed


@pytest.mark.parametrize(
    "frames, kernel, stride, grid",
    [
        (1024, (16, 16), (16, 16), (8, 64)),  # pretraining: 512 patches
        (1024, (16, 16), (10, 10), (12, 101)),  # AudioSet fine-tuning: 1212 tokens
        (512, (16, 16), (10, 10), (12, 50)),  # ESC-50
        (128, (16, 16), (10, 10), (12, 12)),  # Speech Commands
        (1024, (128, 2), (128, 2), (1, 512)),  # frame model
    ],
)
def test_grid_shapes(frames, kernel, stride, grid):
    assert grid_shape((128, frames), kernel, stride) == grid
    embed = PatchEmbed(8, kernel, stride)
    assert embed(torch.zeros(1, frames, 128)).shape == (1, grid[0] * grid[1], 8)


def test_token_order_is_frequency_row_first():
    embed = PatchEmbed(1, (16, 16), (16, 16))
    with torch.no_grad():
        embed.proj.weight.fill_(1.0 / 256)  # each token = mean of its patch
        embed.proj.bias.zero_()
    spec = torch.zeros(1, 64, 128)  # (B, T, F): 8 freq rows x 4 time columns
    spec[0, 16:32, 32:48] = 1.0  # time column 1, frequency row 2
    tokens = embed(spec)[0, :, 0]
    assert tokens.argmax().item() == 2 * 4 + 1  # index f * T' + t
    assert torch.isclose(tokens.max(), torch.tensor(1.0))


def test_pos_embed_identity_when_grids_match():
    pos = torch.randn(1, 8 * 64, 16)
    assert resample_pos_embed(pos, (8, 64), (8, 64)) is pos


def test_pos_embed_pretrain_to_finetune_grid_and_back():
    pos = torch.randn(1, 8 * 64, 16)
    fine = resample_pos_embed(pos, (8, 64), (12, 101))
    assert fine.shape == (1, 12 * 101, 16)
    back = resample_pos_embed(fine, (12, 101), (8, 64))
    assert back.shape == (1, 8 * 64, 16)


def test_bilinear_resize_keeps_what_is_constant_along_time():
    rows = torch.randn(8, 1, 16).expand(8, 64, 16)  # each frequency row constant in time
    fine = resample_pos_embed(rows.reshape(1, 8 * 64, 16), (8, 64), (12, 101)).reshape(12, 101, 16)
    assert torch.allclose(fine, fine[:, :1].expand(12, 101, 16), atol=1e-6)


def test_shorter_time_grid_is_a_centre_crop():
    pos = torch.randn(1, 8 * 64, 4)
    cropped = resample_pos_embed(pos, (8, 64), (8, 12))  # 128 frames at stride 16... in time
    grid = pos.reshape(8, 64, 4)
    assert torch.equal(cropped.reshape(8, 12, 4), grid[:, 26:38])  # official crop 26:38


def test_speech_commands_geometry_matches_official_row_count():
    pos = torch.randn(1, 8 * 64, 4)
    assert resample_pos_embed(pos, (8, 64), (12, 12)).shape[1] == 144  # + 1 cls = 145 rows


def test_bad_pos_embed_size():
    with pytest.raises(ValueError, match="grid"):
        resample_pos_embed(torch.randn(1, 100, 4), (8, 64), (12, 101))


def test_time_resampling_is_the_crop_or_the_bilinear_resize_it_replaces():
    # The gather of time_resample_weights against the two operations it stands for:
    # slicing out the centre columns and F.interpolate(bilinear, align_corners=False).
    import torch.nn.functional as F

    from ssamba.layers.patch_embed import resample_pos_embed

    g = torch.Generator().manual_seed(0)
    f0, t0, dim = 8, 12, 5
    pos = torch.randn(1, f0 * t0, dim, generator=g)
    grid = pos.transpose(1, 2).reshape(1, dim, f0, t0)
    for t1 in (1, 2, 5, 11, 12, 13, 17, 40):
        got = resample_pos_embed(pos, (f0, t0), (f0, t1))
        if t1 < t0:
            start = t0 // 2 - t1 // 2
            want = grid[..., start : start + t1]
        else:
            want = F.interpolate(grid, size=(f0, t1), mode="bilinear", align_corners=False)
        want = want.reshape(1, dim, f0 * t1).transpose(1, 2)
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-5), t1  # the resize agrees to fp32 rounding of the source index
    assert resample_pos_embed(pos, (f0, t0), (f0, t0)) is pos


def _resample_by_loops(pos, old, new):
    """The resampling rule written out cell by cell in float64 (no torch ops): along time
    then frequency, a centre crop (start n0 // 2 - n1 // 2) when shorter, else linear
    interpolation at half-pixel centres, src = (dst + 0.5) * n0 / n1 - 0.5 clamped at 0."""
    (f0, t0), (f1, t1) = old, new
    dim = pos.shape[2]
    cells = pos[0].double().reshape(f0, t0, dim).tolist()

    def axis(values, n0, n1):  # values: a list of n0 vectors -> n1 vectors
        if n1 == n0:
            return values
        if n1 < n0:
            start = n0 // 2 - n1 // 2
            return values[start:start + n1]
        out = []
        for j in range(n1):
            src = max((j + 0.5) * n0 / n1 - 0.5, 0.0)
            i0 = min(int(src), n0 - 1)
            i1 = min(i0 + 1, n0 - 1)
            w = src - i0
            out.append([(1 - w) * a + w * b for a, b in zip(values[i0], values[i1])])
        return out

    cells = [axis(row, t0, t1) for row in cells]  # time, per frequency row
    columns = [axis([row[t] for row in cells], f0, f1) for t in range(t1)]  # frequency, per column
    return torch.tensor([[columns[t][f] for t in range(t1)] for f in range(f1)], dtype=torch.float64).reshape(1, f1 * t1, dim)


@pytest.mark.parametrize("old,new", [((8, 64), (12, 101)), ((8, 64), (8, 12)), ((8, 64), (6, 100)),
                                     ((1, 512), (1, 1212)), ((12, 101), (8, 64)), ((3, 7), (5, 7))])
def test_resampling_equals_an_independent_cell_by_cell_implementation(old, new):
    pos = torch.randn(1, old[0] * old[1], 5, generator=torch.Generator().manual_seed(1))
    ours = resample_pos_embed(pos, old, new)
    assert ours.shape == (1, new[0] * new[1], 5)
    # the source index is computed in fp32 (as F.interpolate computes it): its rounding at
    # index ~500 (ulp 3e-5) moves the result by up to ~1e-4 on unit-variance embeddings
    assert torch.allclose(ours.double(), _resample_by_loops(pos, old, new), atol=2e-4)
