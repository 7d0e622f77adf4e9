import pytest
import torch

from ssamba.frontend import DATASET_STATS, FrontendConfig, LogMelFrontend, kaldi_fbank


def test_pads_short_and_crops_long_clips(gen):
    frontend = LogMelFrontend(FrontendConfig(target_length=128))
    short = frontend(torch.randn(2, 8000, generator=gen))  # 48 frames
    long = frontend(torch.randn(2, 48000, generator=gen))  # 298 frames
    assert short.shape == long.shape == (2, 128, 128)
    # padding happens before normalisation, with zeros, as in SSAST
    pad_value = (0 - frontend.config.mean) / (2 * frontend.config.std)
    assert torch.allclose(short[:, 48:], torch.full_like(short[:, 48:], pad_value))
    assert not torch.allclose(short[:, 47], torch.full_like(short[:, 47], pad_value))


def test_removes_mean_and_normalises_with_dataset_statistics(gen):
    config = FrontendConfig.for_dataset("speechcommands", target_length=98)
    assert (config.mean, config.std) == DATASET_STATS["speechcommands"]
    wave = torch.randn(16000, generator=gen)
    out = LogMelFrontend(config)(wave + 0.25)  # a DC offset must not matter
    expected = (kaldi_fbank(wave - wave.mean()) - config.mean) / (2 * config.std)
    assert torch.allclose(out, expected, atol=1e-4)


def test_unknown_dataset_statistics():
    with pytest.raises(ValueError, match="known"):
        FrontendConfig.for_dataset("timit")
