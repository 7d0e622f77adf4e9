import pytest
import torch

from ssamba.data import add_noise_and_roll, mixup_waveforms, sample_mixup_lambda, spec_augment


def _bands(mask: torch.Tensor) -> tuple[list[int], list[int]]:
    """Fully masked columns (frequency bins) and rows (frames) of a (T, F) mask."""
    cols = mask.all(dim=0).nonzero().flatten().tolist()
    rows = mask.all(dim=1).nonzero().flatten().tolist()
    return cols, rows


def _contiguous(idx: list[int]) -> bool:
    return idx == list(range(idx[0], idx[0] + len(idx))) if idx else True


def test_spec_augment_masks_one_frequency_band_and_one_time_band():
    spec = 1 + torch.rand(100, 64, generator=torch.Generator().manual_seed(0))  # no zeros
    freqm, timem = 12, 30
    freq_widths, time_widths = set(), set()
    for seed in range(300):
        out = spec_augment(spec, freqm, timem, torch.Generator().manual_seed(seed), mask_value=-3.0)
        mask = out == -3.0
        cols, rows = _bands(mask)
        assert _contiguous(cols) and _contiguous(rows)
        band = torch.zeros_like(mask)
        band[:, cols] = True
        band[rows, :] = True
        assert torch.equal(mask, band)  # nothing masked outside the two bands
        assert torch.equal(out[~mask], spec[~mask])  # and nothing else changed
        freq_widths.add(len(cols))
        time_widths.add(len(rows))
    # widths are uniform over 0 .. max - 1, as torchaudio's FrequencyMasking / TimeMasking
    assert freq_widths == set(range(freqm))
    assert time_widths <= set(range(timem)) and len(time_widths) > timem // 2


def test_spec_augment_is_deterministic_per_generator_and_pure():
    spec = torch.randn(50, 40, generator=torch.Generator().manual_seed(1))
    before = spec.clone()
    a = spec_augment(spec, 20, 20, torch.Generator().manual_seed(7))
    b = spec_augment(spec, 20, 20, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert torch.equal(spec, before)  # the input is not modified
    different = [
        not torch.equal(a, spec_augment(spec, 20, 20, torch.Generator().manual_seed(s)))
        for s in range(8, 18)
    ]
    assert sum(different) >= 8


def test_spec_augment_zero_widths_and_oversized_masks():
    spec = torch.randn(10, 8)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert torch.equal(spec_augment(spec, 0, 0, gen), spec)
    assert torch.equal(gen.get_state(), state)  # nothing drawn
    for seed in range(50):  # wider than the axis: clipped, never an error
        out = spec_augment(spec, 100, 100, torch.Generator().manual_seed(seed), mask_value=0.0)
        assert out.shape == spec.shape
    with pytest.raises(ValueError, match="freqm"):
        spec_augment(spec, -1, 0, gen)


def test_mixup_waveforms_math():
    g = torch.Generator().manual_seed(0)
    w1 = torch.randn(1000, generator=g, dtype=torch.float64) + 0.3
    w2_short = torch.randn(600, generator=g, dtype=torch.float64) - 0.2
    w2_long = torch.randn(1500, generator=g, dtype=torch.float64) + 1.0

    for w2 in (w2_short, w2_long):
        out = mixup_waveforms(w1, w2, 0.7)
        assert out.shape == w1.shape
        assert abs(out.mean().item()) < 1e-12
    # lam = 1: the first clip, mean removed
    assert torch.allclose(mixup_waveforms(w1, w2_short, 1.0), w1 - w1.mean())
    # lam = 0: the second clip, mean removed, zero-padded at the end (then re-centred)
    only2 = mixup_waveforms(w1, w2_short, 0.0)
    tail = only2[600:]
    assert torch.allclose(tail, tail[0].expand_as(tail))  # the padding is constant
    assert torch.allclose(only2[:600] - tail[0], w2_short - w2_short.mean())
    # lam = 0: the second clip, cropped to the first's length
    cropped = mixup_waveforms(w1, w2_long, 0.0)
    expected = (w2_long - w2_long.mean())[:1000]
    assert torch.allclose(cropped, expected - expected.mean())
    # linear in between
    lam = 0.35
    mix = mixup_waveforms(w1, w2_long, lam)
    assert torch.allclose(mix, lam * mixup_waveforms(w1, w2_long, 1.0) + (1 - lam) * cropped)
    with pytest.raises(ValueError, match="lambda"):
        mixup_waveforms(w1, w2_long, 1.5)


def test_mixup_lambda_is_beta_10_10_and_deterministic():
    gen = torch.Generator().manual_seed(3)
    draws = torch.tensor([sample_mixup_lambda(gen) for _ in range(4000)])
    assert 0 < draws.min() and draws.max() < 1
    assert abs(draws.mean().item() - 0.5) < 0.01
    assert abs(draws.std().item() - (1 / 84) ** 0.5) < 0.01  # Beta(10, 10): var = 1 / 84
    a = sample_mixup_lambda(torch.Generator().manual_seed(11))
    b = sample_mixup_lambda(torch.Generator().manual_seed(11))
    assert a == b


def test_noise_and_roll():
    spec = torch.arange(64, dtype=torch.float32)[:, None].repeat(1, 16)  # frame t holds value t
    shifts, scales = set(), []
    for seed in range(200):
        out = add_noise_and_roll(spec, torch.Generator().manual_seed(seed))
        assert out.shape == spec.shape and out.dtype == spec.dtype
        shift = int(out[0, 0].floor().item())  # row 0 now holds frame -shift (mod 64)
        shift = -shift if shift < 32 else 64 - shift
        unrolled = torch.roll(out, -shift, dims=0)
        noise = unrolled - spec
        assert noise.min() >= 0 and noise.max() < 0.1
        shifts.add(shift)
        scales.append(noise.max().item())
        again = add_noise_and_roll(spec, torch.Generator().manual_seed(seed))
        assert torch.equal(out, again)
    assert shifts == set(range(-10, 10))  # integers in [-10, 10)
    assert min(scales) < 0.02 and max(scales) > 0.08  # scale ~ U(0, 1) / 10
