"""Peak memory of ``ssamba embed`` on one long file (the README's bounded-memory claim).

Writes a file of MINUTES minutes of noise-modulated tones (16 kHz mono FLAC by default,
``--rate 44100 --channels 2`` for CD audio), embeds it with a randomly initialised preset
in a fresh process, and prints the file's length, the wall time and the peak resident
memory of that process (VmHWM: ru_maxrss would carry the forking parent's RSS across
exec), plus the same for a 1-minute file, so the growth per minute can be read off one run:

    python examples/embed_memory.py --minutes 60
    python examples/embed_memory.py --minutes 60 --rate 44100 --channels 2 --preset ssamba_test
    python examples/embed_memory.py --minutes 20 60 --whole      # one encoder pass per file
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_CHILD = (
    "import sys\n"
    "from ssamba.benchmarks._worker import peak_rss_bytes\n"
    "from ssamba.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "print('peak_rss_mb', peak_rss_bytes() / 2**20)\n"
    "sys.exit(rc)\n"
)


def write_audio(path: Path, minutes: float, rate: int, channels: int) -> None:
    import soundfile

    rng = np.random.default_rng(0)
    with soundfile.SoundFile(str(path), "w", samplerate=rate, channels=channels, subtype="PCM_16") as f:
        for _ in range(int(np.ceil(minutes * 6))):  # 10 s at a time
            t = np.arange(10 * rate) / rate
            tone = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
            block = (tone + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
            f.write(np.repeat(block[:, None], channels, axis=1))


def measure(path: Path, preset: str, out: Path, whole: bool = False) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, "embed", str(path), "--checkpoint", preset, "--out", str(out),
                           "--no-progress", "--overwrite", *(["--whole"] if whole else [])],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return time.perf_counter() - start, float(proc.stdout.split("peak_rss_mb")[1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[60.0], help="file lengths after a 1-minute one")
    parser.add_argument("--rate", type=int, default=16000)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--preset", default="ssamba_tiny", help="randomly initialised preset to embed with")
    parser.add_argument("--whole", action="store_true", help="ssamba embed --whole: one encoder pass per file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        mode = "whole file" if args.whole else "windows"
        for minutes in (1.0, *args.minutes):
            path = tmp / f"{minutes:g}min.flac"
            write_audio(path, minutes, args.rate, args.channels)
            seconds, peak = measure(path, args.preset, tmp / "out", args.whole)
            path.unlink()
            rows.append((minutes, seconds, peak))
            print(f"{args.preset} ({mode}), {minutes:6.1f} min of {args.rate} Hz x{args.channels}: embedded in "
                  f"{seconds:7.1f} s, peak memory {peak:7.0f} MB", flush=True)
        (m1, _, p1), (m2, _, p2) = rows[0], rows[-1]
        if m2 > m1:
            print(f"growth: {(p2 - p1) / (m2 - m1):.1f} MB per minute of audio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
