"""Front end: audio files and waveforms -> Kaldi log-mel spectrograms ``(B, T, F)``."""

from .audio import decode_audio, load_audio, resample
from .kaldi import kaldi_fbank, mel_banks, num_frames
from .logmel import DATASET_STATS, FrontendConfig, LogMelFrontend, pad_or_crop

__all__ = [
    "DATASET_STATS",
    "FrontendConfig",
    "LogMelFrontend",
    "decode_audio",
    "kaldi_fbank",
    "load_audio",
    "mel_banks",
    "num_frames",
    "pad_or_crop",
    "resample",
]
