"""Reading audio files into 16 kHz mono float waveforms."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)


def resample(waveform: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample a 1-D float array with soxr (high quality)."""
    if orig_rate == target_rate:
        return waveform
    import soxr

    return soxr.resample(waveform, orig_rate, target_rate, quality="HQ")


def _truncated(header: str) -> tuple[int, int] | None:
    """``(announced, present)`` data bytes when libsndfile's header report says the data
    chunk is cut short; None otherwise (also for streamed WAVs whose size field is a
    placeholder: 0 or 0xFFFFFFFF)."""
    import re

    match = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", header, re.M)
    if not match:
        return None
    announced, present = int(match.group(1)), int(match.group(2))
    if announced in (0, 0xFFFFFFFF) or present >= announced:
        return None
    return announced, present


def load_audio(path: str | Path, sample_rate: int = 16000, info: dict | None = None) -> Tensor:
    """Load ``path`` as a float32 mono waveform ``(S,)`` at ``sample_rate``.

    Multi-channel audio is averaged to mono; other sample rates are resampled (logged at
    DEBUG level; ``info``, a dict, receives the file's ``rate`` and ``channels`` so that a
    caller can summarise the conversions of a run in one line). Any file ``soundfile``
    (libsndfile) reads works: WAV, FLAC, OGG, MP3 with a recent libsndfile. An unreadable
    file raises ``ValueError`` naming it.
    """
    path = Path(path)
    return decode_audio(str(path), sample_rate, name=str(path), info=info)


def conversion_summary(rates: dict[int, int], downmixed: int, total: int, sample_rate: int) -> str:
    """One line for a run's conversions: ``"48 of 60 clips resampled from 44.1 kHz to 16
    kHz; 12 downmixed to mono"``, or ``""`` when nothing was converted. ``rates``: source
    rate -> clips resampled from it."""
    parts = []
    resampled = sum(rates.values())
    if resampled:
        sources = ", ".join(f"{r / 1000:g} kHz" for r in sorted(rates))
        parts.append(f"{resampled} of {total} clips resampled from {sources} to {sample_rate / 1000:g} kHz")
    if downmixed:
        parts.append(f"{downmixed} of {total} downmixed to mono" if not resampled else f"{downmixed} downmixed to mono")
    return "; ".join(parts)


def decode_audio(
    source: str | Path | bytes | bytearray | memoryview | BinaryIO,
    sample_rate: int = 16000,
    name: str | None = None,
    info: dict | None = None,
) -> Tensor:
    """Decode audio from a path, encoded bytes or a binary file object (see :func:`load_audio`).

    Returns a float32 mono waveform ``(S,)`` at ``sample_rate`` (channels averaged,
    other rates resampled), the same samples :func:`load_audio` gives for the same file
    contents. ``name`` names the source in errors and logs (default: the path, or
    ``"<bytes>"``). Undecodable or empty audio raises ``ValueError``.
    """
    import soundfile

    if isinstance(source, (bytes, bytearray, memoryview)):
        name = name or "<bytes>"
        source = io.BytesIO(bytes(source))
    elif isinstance(source, (str, Path)):
        name = name or str(source)
        source = str(source)
        try:
            mode = os.stat(source).st_mode
        except OSError as err:
            raise ValueError(f"cannot read audio file {name!r}: {err.strerror or err}") from None
        if not stat.S_ISREG(mode):  # opening a FIFO or a device blocks or reads forever
            raise ValueError(f"cannot read audio file {name!r}: not a regular file (a FIFO, device or folder)")
    else:
        name = name or str(getattr(source, "name", "<file object>"))
    try:
        # a path is opened by Python (any file name the OS gives, undecodable bytes too),
        # and libsndfile reads the open file
        with (open(source, "rb") if isinstance(source, str) else contextlib.nullcontext(source)) as handle, \
                soundfile.SoundFile(handle) as f:
            mono = _read_mono(f, sample_rate)
            rate, channels, header = f.samplerate, f.channels, f.extra_info
    except Exception as err:  # soundfile raises several types (LibsndfileError, RuntimeError)
        raise ValueError(f"cannot read audio file {name!r}: {err}") from err
    short = _truncated(header)
    if short:
        log.warning("%s is truncated: its header announces %d bytes of audio, the file holds %d; "
                    "read the %.2f s that are there", name, short[0], short[1], mono.shape[0] / sample_rate)
    if mono.size == 0:
        raise ValueError(f"audio file {name!r} has no samples")
    if channels > 1:
        log.debug("%s: downmixed %d channels to mono", name, channels)
    if rate != sample_rate:
        log.debug("%s: resampled %d Hz -> %d Hz", name, rate, sample_rate)
    if info is not None:
        info.update(rate=rate, channels=channels)
    return torch.from_numpy(mono)


#: Audio declaring a lower sample rate is refused (no recording is made at it; a forged
#: header at a few Hz would make resampling allocate gigabytes).
MIN_SAMPLE_RATE = 1000

#: Frames decoded at a time: memory holds the 16 kHz mono result and one block, not the
#: file's own channels and rate (an hour of 44.1 kHz stereo would be 1.3 GB as float32).
BLOCK_FRAMES = 1 << 16


def _read_mono(f, sample_rate: int) -> np.ndarray:
    """Decode an open ``soundfile.SoundFile`` block by block into float32 mono at
    ``sample_rate`` (channels averaged; other rates resampled by a soxr stream, whose
    output equals :func:`resample` of the whole signal)."""
    import soxr

    if f.samplerate < MIN_SAMPLE_RATE:  # resampling 8 Hz to 16 kHz multiplies the samples by 2000
        raise ValueError(f"its header declares {f.samplerate} Hz; rates below {MIN_SAMPLE_RATE} Hz are refused")
    stream = soxr.ResampleStream(f.samplerate, sample_rate, 1, dtype="float32", quality="HQ") \
        if f.samplerate != sample_rate else None
    expected = int(np.ceil(f.frames * sample_rate / f.samplerate)) + 16 if f.frames > 0 else 0
    out = np.empty(expected, dtype=np.float32)
    used = 0

    def put(piece: np.ndarray) -> None:
        nonlocal out, used
        if used + piece.shape[0] > out.shape[0]:  # the header under-counted: grow
            out = np.concatenate([out[:used], np.empty(max(piece.shape[0], out.shape[0]), np.float32)])
        out[used:used + piece.shape[0]] = piece
        used += piece.shape[0]

    while True:
        block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
        if block.shape[0] == 0:
            break
        mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
        put(stream.resample_chunk(mono, last=False) if stream else mono)
    if stream:
        put(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    return out[:used]
