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


def test_one_pipeline_lengths_and_the_augmentation_hook(gen):
    # features(): mean removal -> fbank -> pad/crop with lengths -> hook -> normalise; the
    # hook sees the padded, un-normalised log-mel (where SSAST masks with 0).
    frontend = LogMelFrontend(FrontendConfig(target_length=64))
    wave = torch.randn(2, 4000, generator=gen)  # 23 frames
    seen = []

    def hook(spec):
        seen.append(spec.clone())
        return torch.zeros_like(spec)

    spec, lengths = frontend.features(wave, augment=hook)
    assert frontend.num_frames(4000) == 23 == frontend.fbank(wave).shape[1]
    assert lengths.tolist() == [23, 23]
    raw = frontend.fbank(wave)
    assert torch.equal(seen[0][:, :23], raw) and torch.all(seen[0][:, 23:] == 0)
    assert torch.allclose(spec, frontend.normalize(torch.zeros(2, 64, 128)))
    cropped, lengths = frontend.features(torch.randn(1, 16000, generator=gen))
    assert cropped.shape == (1, 64, 128) and lengths.tolist() == [64]
    assert torch.equal(frontend(wave), frontend.features(wave)[0])


def test_fbank_removes_the_given_mean_or_each_rows_own(gen):
    frontend = LogMelFrontend()
    wave = torch.randn(2, 8000, generator=gen) + torch.tensor([[0.5], [-2.0]])
    own = frontend.fbank(wave)
    assert torch.allclose(own, frontend.fbank(wave - wave.mean(dim=1, keepdim=True), mean=0.0), atol=1e-5)
    shifted = frontend.fbank(wave[0], mean=0.5)
    assert torch.allclose(shifted, frontend.fbank(wave[0] - 0.5, mean=0.0), atol=1e-5)


@pytest.mark.parametrize("wave, message", [
    (torch.zeros(0), "no samples"),
    (torch.full((1000,), float("inf")), "NaN or infinite"),
    (torch.randn(399), "shorter than one frame"),
    (torch.ones(1000, dtype=torch.int16), "floating point"),
    (torch.randn(1, 1, 1000), "shape"),
    ([0.0] * 1000, "torch.Tensor"),
])
def test_one_check_of_a_waveform(wave, message):
    frontend = LogMelFrontend()
    assert message in frontend.problem(wave)
    with pytest.raises(ValueError, match=message):
        frontend(wave)
    assert frontend.problem(torch.randn(400)) == ""


def test_finite_samples_too_large_for_the_filterbank_are_refused():
    from ssamba.frontend.logmel import NonFiniteFeaturesError

    frontend = LogMelFrontend(FrontendConfig(target_length=64))
    loud = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    loud[1] *= 1e30  # finite, but its power spectrum overflows
    assert frontend.problem(loud) == ""  # the samples alone pass
    with pytest.raises(NonFiniteFeaturesError, match=r"batch rows \[1\]"):
        frontend(loud)
    assert torch.isfinite(frontend(loud[:1] * 1e3)).all()  # loud but representable: fine
