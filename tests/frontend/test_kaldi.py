import math

import pytest
import torch

from ssamba.frontend import kaldi_fbank, mel_banks, num_frames
from ssamba.frontend.kaldi import FLOAT32_EPS

from ..conftest import speech_like

LENGTHS = [400, 1234, 16000, 40_017]


def oracle_fbank(waveform: torch.Tensor, num_mel_bins: int):
    """kaldi-native-fbank with the SSAST/SSAMBA options."""
    knf = pytest.importorskip("kaldi_native_fbank")
    import numpy as np

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = 16000
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hanning"
    opts.frame_opts.preemph_coeff = 0.97
    opts.frame_opts.remove_dc_offset = True
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = num_mel_bins
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = 0.0
    opts.use_energy = False
    opts.htk_compat = True
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(16000, waveform.tolist())
    fbank.input_finished()
    return torch.from_numpy(np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)]))


@pytest.mark.parametrize("num_mel_bins", [80, 64])
@pytest.mark.parametrize("kind", ["speech", "noise"])
@pytest.mark.parametrize("length", LENGTHS)
def test_matches_kaldi_native_fbank(num_mel_bins, kind, length, gen):
    wave = speech_like(length, gen) if kind == "speech" else 0.3 * torch.randn(length, generator=gen)
    expected = oracle_fbank(wave, num_mel_bins)
    ours = kaldi_fbank(wave, num_mel_bins=num_mel_bins)[0]
    assert ours.shape == expected.shape == (num_frames(length, 400, 160), num_mel_bins)
    assert (ours - expected).abs().max().item() <= 5e-4


def test_oracle_refuses_128_bins_and_our_empty_band_is_log_eps(gen):
    knf = pytest.importorskip("kaldi_native_fbank")
    with pytest.raises(Exception):
        oracle_fbank(torch.randn(1000, generator=gen), 128)

    banks = mel_banks(128, 512, 16000.0, 20.0, 8000.0)
    empty = (banks.sum(dim=1) == 0).nonzero().flatten().tolist()
    assert len(empty) == 1  # one triangle falls between two FFT bins
    fbank = kaldi_fbank(0.3 * torch.randn(2, 16000, generator=gen))  # 128 bins by default
    assert torch.all(fbank[..., empty] == math.log(FLOAT32_EPS))
    others = [i for i in range(128) if i not in empty]
    assert torch.all(fbank[..., others] > math.log(FLOAT32_EPS))  # real energy, not the floor


def test_mel_triangles_partition_the_spectrum():
    """Adjacent triangles share edges, so their weights sum to 1 at every FFT bin between
    the first and last centre - for 128 bins (no oracle) as for 64 (oracle-checked)."""
    banks128 = mel_banks(128, 512, 16000.0, 20.0, 8000.0)
    banks64 = mel_banks(64, 512, 16000.0, 20.0, 8000.0)
    for banks in (banks128, banks64):
        coverage = banks.sum(dim=0)[40:240]  # 1.25 kHz .. 7.5 kHz
        assert torch.allclose(coverage, torch.ones_like(coverage), atol=1e-9)
    assert torch.all(banks128[:, -1] == 0)  # Nyquist bin never weighted, as in Kaldi


def test_shapes_and_batching(gen):
    wave = torch.randn(3, 160_000, generator=gen)
    batched = kaldi_fbank(wave)
    assert batched.shape == (3, 998, 128)  # 10 s -> 998 frames
    single = kaldi_fbank(wave[1])
    assert single.shape == (1, 998, 128)
    assert torch.allclose(batched[1], single[0], atol=1e-5)


@pytest.mark.parametrize(
    "wave, rate, message",
    [
        (torch.randn(2, 2, 1000), 16000, "shape"),
        (torch.randn(1000), 44100, "sample rate"),
        (torch.zeros(0), 16000, "empty"),
        (torch.full((1000,), float("nan")), 16000, "NaN"),
        (torch.randn(399), 16000, "shorter than one frame"),
        (torch.ones(1000, dtype=torch.int16), 16000, "floating point"),
    ],
)
def test_bad_input_raises_value_error(wave, rate, message):
    with pytest.raises(ValueError, match=message):
        kaldi_fbank(wave, sample_rate=rate)
