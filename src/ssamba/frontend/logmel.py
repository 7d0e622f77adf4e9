"""The model input: waveform -> normalised log-mel spectrogram ``(B, T, F)``.

One code path for training and inference (:class:`LogMelFrontend`): mean removal, Kaldi
filterbank, zero-padding or cropping to ``target_length`` frames, optional augmentation,
then ``(x - mean) / (2 * std)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ..config import NonNegativeFloat, PositiveFloat, PositiveInt, Probability, option
from .kaldi import compute_fbank, frame_geometry, num_frames, waveform_problem

# (mean, std) of the log-mel features, as published with SSAST / SSAMBA.
DATASET_STATS: dict[str, tuple[float, float]] = {
    "audioset": (-4.2677393, 4.5689974),  # also LibriSpeech and the pretraining mix
    "esc50": (-6.6268077, 5.358466),
    "speechcommands": (-6.845978, 5.5654526),
}


@dataclass
class FrontendConfig:
    """Options of :class:`LogMelFrontend`; defaults are the pretraining front end."""

    sample_rate: PositiveInt = option(16000,
                                      'Hz the filterbank runs at; files at other rates are resampled to it on loading')
    num_mel_bins: PositiveInt = option(128, 'F')
    frame_length_ms: PositiveFloat = option(25.0, 'window length')
    frame_shift_ms: PositiveFloat = option(10.0, 'hop between frames')
    preemphasis: Probability = option(0.97, 'x[n] - k * x[n-1] within each frame, k in [0, 1]')
    low_freq: NonNegativeFloat = option(20.0, 'Hz; high edge is Nyquist')
    target_length: PositiveInt = option(1024, 'T frames after padding / cropping (1024 AudioSet, 512 ESC-50, 128 SC)')
    mean: float = option(DATASET_STATS["audioset"][0], 'dataset statistics of the log-mel values')
    std: PositiveFloat = option(DATASET_STATS["audioset"][1], 'input = (fbank - mean) / (2 * std)')

    @classmethod
    def for_dataset(cls, name: str, **overrides) -> "FrontendConfig":
        """Config with a published dataset's statistics (see ``DATASET_STATS``)."""
        if name not in DATASET_STATS:
            raise ValueError(f"no statistics for {name!r}; known: {sorted(DATASET_STATS)}")
        mean, std = DATASET_STATS[name]
        return cls(mean=mean, std=std, **overrides)


def pad_or_crop(fbank: Tensor, target_length: int) -> Tensor:
    """Zero-pad at the end or truncate ``(B, T, F)`` to ``target_length`` frames."""
    # padded by a whole target_length, then cut: no branch on the length, so that the
    # exported (ONNX) front end takes any length in one graph
    return nn.functional.pad(fbank, (0, 0, 0, target_length))[:, :target_length]


class NonFiniteFeaturesError(ValueError):
    """A waveform whose samples are finite gave NaN or infinite log-mel features."""


class LogMelFrontend(nn.Module):
    """The front end, one pipeline for training, statistics and inference:

    waveform ``(B, S)`` or ``(S,)`` at ``config.sample_rate`` -> mean removal -> Kaldi
    filterbank -> zero-pad or crop to ``target_length`` frames (with the real lengths) ->
    optional augmentation -> ``(x - mean) / (2 * std)``.

    The augmentation hook sees the padded, un-normalised log-mel, where SSAST's data
    loader applies SpecAugment: masks are drawn over all ``target_length`` frames and
    filled with 0 before normalisation. Every caller (datasets and shards, ``stats``, the
    embedder, ``ssamba fbank``, the demo through the datasets) goes through this object;
    :meth:`problem` is the one check of a waveform and :meth:`num_frames` the one frame
    count.

    >>> frontend = LogMelFrontend(FrontendConfig(target_length=128))
    >>> frontend(torch.randn(4, 16000)).shape
    torch.Size([4, 128, 128])
    """

    def __init__(self, config: FrontendConfig | None = None):
        super().__init__()
        self.config = config or FrontendConfig()
        self.frame_length, self.frame_shift = frame_geometry(
            self.config.sample_rate, self.config.frame_length_ms, self.config.frame_shift_ms)

    def num_frames(self, num_samples: int) -> int:
        """Filterbank frames of ``num_samples`` samples (0 if shorter than one frame)."""
        return num_frames(num_samples, self.frame_length, self.frame_shift)

    def problem(self, waveform) -> str:
        """Why ``waveform`` cannot be used (``""`` if it can): not a float tensor of one or
        two dimensions, empty, non-finite, or shorter than one frame."""
        return waveform_problem(waveform, self.frame_length)

    def fbank(self, waveform: Tensor, mean: float | None = None, checked: bool = False) -> Tensor:
        """Un-normalised, un-padded log-mel ``(B, T, F)`` of the waveform less ``mean``
        (default: each row's own mean). ``checked``: :meth:`problem` was already asked."""
        if not checked:
            problem = self.problem(waveform)
            if problem:
                raise ValueError(problem)
        if waveform.dim() == 1:
            waveform = waveform.unsqueeze(0)
        waveform = waveform - (waveform.mean(dim=1, keepdim=True) if mean is None else mean)
        c = self.config
        fbank = compute_fbank(waveform, c.sample_rate, c.num_mel_bins, c.frame_length_ms, c.frame_shift_ms,
                              c.preemphasis, True, c.low_freq, 0.0)
        if torch.compiler.is_exporting():  # traced into a graph: no data-dependent check
            return fbank
        finite = torch.isfinite(fbank)
        if not bool(finite.all()):  # finite samples can still overflow the power spectrum
            rows = (~finite).flatten(1).any(dim=1).nonzero().flatten().tolist()
            peak = float(waveform.abs().max())
            raise NonFiniteFeaturesError(f"log-mel features are not finite (batch rows {rows}; largest |sample| "
                                         f"{peak:.3g}): the samples are too large for the filterbank")
        return fbank

    def pad_or_crop(self, fbank: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, target_length, F)`` (zero-padded or cropped) and the real frames per row."""
        target = self.config.target_length
        lengths = torch.full((fbank.shape[0],), min(fbank.shape[1], target), dtype=torch.long)
        return pad_or_crop(fbank, target), lengths

    def normalize(self, fbank: Tensor) -> Tensor:
        """``(fbank - mean) / (2 * std)`` with the config's dataset statistics."""
        return (fbank - self.config.mean) / (2 * self.config.std)

    @torch.no_grad()
    def features(self, waveform: Tensor, augment: Callable[[Tensor], Tensor] | None = None,
                 checked: bool = False) -> tuple[Tensor, Tensor]:
        """The model input ``(B, target_length, F)`` and the real frames of each row;
        ``augment`` maps the padded un-normalised log-mel to an augmented one."""
        spec, lengths = self.pad_or_crop(self.fbank(waveform, checked=checked))
        if augment is not None:
            spec = augment(spec)
        return self.normalize(spec), lengths

    def forward(self, waveform: Tensor) -> Tensor:
        """:meth:`features` without augmentation, the input only."""
        return self.features(waveform)[0]
