"""``ssamba bench embed``: wall time of ``ssamba embed`` over many short files, quiet and under load.

Writes ``--files`` short WAV clips (tones in noise, 0.5-1.5 s, 16 kHz; seeded) into a
temporary folder, then times the ``ssamba embed`` command on them in a fresh process:
on the machine as it is, and with ``--under-load`` again while a second process (the
same competing PyTorch loop as ``ssamba bench train --under-load``) keeps the cores
busy. Prints both times, the slowdown and the OpenMP wait policy each run chose
(:mod:`ssamba.threads`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import background_load


def write_clips(folder: Path, count: int, seed: int = 0) -> None:
    """``count`` seeded 16 kHz clips of 0.5-1.5 s: a tone in light noise."""
    import numpy as np
    import soundfile

    rng = np.random.default_rng(seed)
    for i in range(count):
        n = int(16000 * rng.uniform(0.5, 1.5))
        t = np.arange(n) / 16000
        wave = 0.1 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.01 * rng.standard_normal(n)
        soundfile.write(folder / f"{i:04d}.wav", wave.astype(np.float32), 16000)


def time_embed(checkpoint: str, clips: Path, out: Path, timeout: float) -> tuple[float, str]:
    """Seconds one ``ssamba embed`` run takes (a fresh process), and its wait policy."""
    code = ("import sys\nfrom ssamba.cli import main\nfrom ssamba.threads import thread_policy\n"
            "rc = main(sys.argv[1:])\nprint('POLICY', thread_policy())\nsys.exit(rc)\n")
    cmd = [sys.executable, "-c", code, "embed", "--checkpoint", checkpoint, "--out", str(out), "--overwrite",
           "--no-progress", str(clips)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"ssamba embed failed (exit {proc.returncode}): {tail}")
    policy = next((ln.split(" ", 1)[1] for ln in proc.stdout.splitlines() if ln.startswith("POLICY ")), "?")
    return elapsed, policy


def run(args) -> int:
    with tempfile.TemporaryDirectory(prefix="ssamba-bench-embed-") as tmp:
        clips, out = Path(tmp) / "clips", Path(tmp) / "out"
        clips.mkdir()
        write_clips(clips, args.files, args.seed)
        print(f"{args.files} clips of 0.5-1.5 s; ssamba embed --checkpoint {args.checkpoint}, "
              f"{os.cpu_count()} CPUs", file=sys.stderr, flush=True)
        quiet, quiet_policy = time_embed(args.checkpoint, clips, out, args.timeout)
        print(f"quiet: {quiet:.1f} s (OpenMP wait policy {quiet_policy})", flush=True)
        if args.under_load:
            with background_load():
                loaded, loaded_policy = time_embed(args.checkpoint, clips, out, args.timeout)
            print(f"under load: {loaded:.1f} s (OpenMP wait policy {loaded_policy})")
            print(f"slowdown ssamba embed: {loaded / quiet:.2f}x ({quiet:.1f} s -> {loaded:.1f} s)")
    return 0
