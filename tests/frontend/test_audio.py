import numpy as np
import pytest
import soundfile
import torch

from ssamba.frontend import load_audio


def test_stereo_44k_is_downmixed_and_resampled(tmp_path):
    rate, seconds = 44100, 0.5
    t = np.arange(int(rate * seconds)) / rate
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.5 * np.sin(2 * np.pi * 440 * t + 0.3)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), rate)

    wave = load_audio(path)
    assert wave.dtype == torch.float32 and wave.dim() == 1
    assert abs(wave.numel() - 8000) <= 1  # 0.5 s at 16 kHz
    # the mono mix of two 440 Hz tones is a 440 Hz tone: check the spectral peak
    spectrum = torch.fft.rfft(wave).abs()
    peak_hz = spectrum.argmax().item() * 16000 / wave.numel()
    assert abs(peak_hz - 440) < 5


def test_16k_mono_is_read_unchanged(tmp_path):
    samples = np.random.default_rng(0).uniform(-0.5, 0.5, 4000).astype(np.float32)
    path = tmp_path / "mono.flac"
    soundfile.write(path, samples, 16000, subtype="PCM_24")
    wave = load_audio(path)
    assert torch.allclose(wave, torch.from_numpy(samples), atol=1e-6)


def test_unreadable_file_names_the_file(tmp_path):
    bad = tmp_path / "not_audio.wav"
    bad.write_bytes(b"this is not a wav file")
    with pytest.raises(ValueError, match="not_audio.wav"):
        load_audio(bad)
    with pytest.raises(ValueError, match="missing.flac"):
        load_audio(tmp_path / "missing.flac")


def test_a_header_declaring_a_few_hertz_is_refused_before_resampling(tmp_path):
    import struct

    from ssamba.frontend import load_audio

    data = b"\x00\x01" * 60_000  # 120 KB of 16-bit mono; its header says 8 Hz
    header = (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
              + struct.pack("<IHHIIHH", 16, 1, 1, 8, 16, 2, 16) + b"data" + struct.pack("<I", len(data)))
    (tmp_path / "8hz.wav").write_bytes(header + data)
    with pytest.raises(ValueError, match="declares 8 Hz; rates below 1000 Hz are refused"):
        load_audio(tmp_path / "8hz.wav")


def test_a_fifo_in_a_manifest_is_a_bad_clip_not_a_hang(tmp_path):
    import json
    import os
    import subprocess
    import sys

    os.mkfifo(tmp_path / "pipe.wav")
    soundfile.write(tmp_path / "ok.wav", 0.1 * np.random.default_rng(0).standard_normal(16000), 16000)
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"data": [{"wav": "pipe.wav"}, {"wav": "ok.wav"}]}))
    with pytest.raises(ValueError, match="not a regular file"):
        load_audio(tmp_path / "pipe.wav")
    for argv in (["stats", str(manifest)],
                 ["embed", str(manifest), "--checkpoint", "ssamba_test", "--out", str(tmp_path / "e"), "--no-progress"]):
        proc = subprocess.run([sys.executable, "-m", "ssamba.cli", *argv], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "not a regular file" in proc.stderr, proc.stderr
