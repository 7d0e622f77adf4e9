"""The model input: waveform -> normalised log-mel spectrogram ``(B, T, F)``.

One code path for training and inference: mean removal, Kaldi filterbank, zero-padding
or cropping to ``target_length`` frames, then ``(x - mean) / (2 * std)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import NonNegativeFloat, PositiveFloat, PositiveInt
from .kaldi import kaldi_fbank, validate_waveform

# (mean, std) of the log-mel features, as published with SSAST / SSAMBA.
DATASET_STATS: dict[str, tuple[float, float]] = {
    "audioset": (-4.2677393, 4.5689974),  # also LibriSpeech and the pretraining mix
    "esc50": (-6.6268077, 5.358466),
    "speechcommands": (-6.845978, 5.5654526),
}


@dataclass
class FrontendConfig:
    """Options of :class:`LogMelFrontend`; defaults are the pretraining front end."""

    sample_rate: PositiveInt = 16000  # Hz; inputs at other rates must be resampled first
    num_mel_bins: PositiveInt = 128  # F
    frame_length_ms: PositiveFloat = 25.0  # window length
    frame_shift_ms: PositiveFloat = 10.0  # hop between frames
    preemphasis: float = 0.97  # x[n] - k * x[n-1] within each frame
    low_freq: NonNegativeFloat = 20.0  # Hz; high edge is Nyquist
    target_length: PositiveInt = 1024  # T frames after padding / cropping (1024 AudioSet, 512 ESC-50, 128 SC)
    mean: float = DATASET_STATS["audioset"][0]  # dataset statistics of the log-mel values
    std: PositiveFloat = DATASET_STATS["audioset"][1]  # input = (fbank - mean) / (2 * std)

    @classmethod
    def for_dataset(cls, name: str, **overrides) -> "FrontendConfig":
        """Config with a published dataset's statistics (see ``DATASET_STATS``)."""
        if name not in DATASET_STATS:
            raise ValueError(f"no statistics for {name!r}; known: {sorted(DATASET_STATS)}")
        mean, std = DATASET_STATS[name]
        return cls(mean=mean, std=std, **overrides)


def pad_or_crop(fbank: Tensor, target_length: int) -> Tensor:
    """Zero-pad at the end or truncate ``(B, T, F)`` to ``target_length`` frames."""
    frames = fbank.shape[1]
    if frames < target_length:
        return nn.functional.pad(fbank, (0, 0, 0, target_length - frames))
    return fbank[:, :target_length]


class LogMelFrontend(nn.Module):
    """Waveform ``(B, S)`` or ``(S,)`` at 16 kHz -> normalised log-mel ``(B, target_length, F)``.

    >>> frontend = LogMelFrontend(FrontendConfig(target_length=128))
    >>> frontend(torch.randn(4, 16000)).shape
    torch.Size([4, 128, 128])
    """

    def __init__(self, config: FrontendConfig | None = None):
        super().__init__()
        self.config = config or FrontendConfig()

    def fbank(self, waveform: Tensor) -> Tensor:
        """Un-normalised, un-padded log-mel ``(B, T, F)`` of the mean-removed waveform."""
        c = self.config
        waveform = validate_waveform(waveform, c.sample_rate, c.sample_rate)
        return self.filterbank(waveform - waveform.mean(dim=1, keepdim=True))

    def filterbank(self, waveform: Tensor) -> Tensor:
        """The Kaldi filterbank with this config's options (no mean removal)."""
        c = self.config
        return kaldi_fbank(
            waveform,
            sample_rate=c.sample_rate,
            num_mel_bins=c.num_mel_bins,
            frame_length_ms=c.frame_length_ms,
            frame_shift_ms=c.frame_shift_ms,
            preemphasis=c.preemphasis,
            low_freq=c.low_freq,
            expected_sample_rate=c.sample_rate,
        )

    def normalize(self, fbank: Tensor) -> Tensor:
        return (fbank - self.config.mean) / (2 * self.config.std)

    @torch.no_grad()
    def forward(self, waveform: Tensor) -> Tensor:
        return self.normalize(pad_or_crop(self.fbank(waveform), self.config.target_length))
