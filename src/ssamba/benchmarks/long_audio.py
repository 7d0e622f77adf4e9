"""``ssamba bench long``: time and peak memory of ``ssamba embed`` on long files, and how
far a short event reaches.

For each length (``--minutes``), a seeded file of noise-modulated tones (16 kHz mono FLAC
by default) is embedded by each model (a preset, initialised with seed 0, or any model
folder) in each mode (``--whole``: one encoder pass over the file; ``windows``: the
model's input length at a time), each run a fresh ``ssamba embed`` process whose peak
resident memory (VmHWM) and wall time are reported. A model whose run times out is not
run at the longer lengths.

``--needle`` hides a 1 s chirp (500 Hz to 4 kHz) in the middle of the same file and embeds
that too, in the spirit of DASS's audio needle in a haystack. Two figures:

* *reach*: how far from the chirp, in seconds, the timestamp embeddings still change by
  more than 0.1% of their norm. Windows stop at the window's edge; a whole-file pass can
  carry the event further;
* *found* / *rank*: a detector - a logistic regression on timestamp embeddings, fitted on
  48 short clips of the model's window length (seeded; half of them with the chirp at a
  random place), embedded in windows - scores every timestamp of the long file; *rank* is
  the number of timestamps outside the chirp that score above its best one (0: found).
  It asks whether what a model learned from short clips still finds the event when the
  whole file is one input.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._worker import CLI_PEAK_RSS_PROGRAM

NEEDLE_S = 1.0
REACH_THRESHOLD = 1e-3


def _background(rng, t):
    """A noise-modulated tone over the times ``t`` (s)."""
    import numpy as np

    tone = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return tone + 0.01 * rng.standard_normal(t.size)


def _chirp(local):
    """The needle at ``local`` seconds into it (zero outside its 1 s)."""
    import numpy as np

    inside = (local >= 0) & (local < NEEDLE_S)
    sweep = 500 * local + (4000 - 500) / (2 * NEEDLE_S) * local**2  # phase / 2 pi
    return np.where(inside, 0.3 * np.sin(2 * np.pi * sweep), 0.0)


def write_haystack(path: Path, minutes: float, rate: int = 16000, channels: int = 1, needle: bool = False) -> float:
    """``minutes`` of noise-modulated tones (seed 0, 10 s blocks); with ``needle`` a 1 s
    chirp added at the middle. Returns the chirp's start in seconds."""
    import numpy as np
    import soundfile

    rng = np.random.default_rng(0)
    blocks = int(np.ceil(minutes * 6))
    start = round(blocks * 10 / 2 - NEEDLE_S / 2, 3)
    with soundfile.SoundFile(str(path), "w", samplerate=rate, channels=channels, subtype="PCM_16") as f:
        for b in range(blocks):
            t = np.arange(10 * rate) / rate
            block = _background(rng, t)
            if needle:
                block = block + _chirp(t + b * 10 - start)
            f.write(np.repeat(block.astype(np.float32)[:, None], channels, axis=1))
    return start


def needle_detector(model: str, clips: int = 48, seed: int = 1):
    """A scorer ``(N, D) -> (N,)`` of timestamp embeddings: a logistic regression fitted
    on ``clips`` seeded clips of ``model``'s window length, every other one with the
    chirp at a random place (timestamps inside the chirp are the positives), embedded
    in windows; features standardised, classes weighted to balance."""
    import numpy as np
    import torch

    from ..interfaces.embedder import load

    embedder = load(model)
    rate = embedder.sample_rate
    window_s = embedder.window_frames * embedder.frontend.config.frame_shift_ms / 1000
    rng = np.random.default_rng(seed)
    t = np.arange(int(window_s * rate)) / rate
    waves, spans = [], []
    for i in range(clips):
        wave = _background(rng, t)
        if i % 2:
            start = rng.uniform(0, max(0.0, window_s - NEEDLE_S))
            wave, span = wave + _chirp(t - start), (start, start + NEEDLE_S)
        else:
            span = (-1.0, -1.0)
        waves.append(torch.from_numpy(wave.astype(np.float32)))
        spans.append(span)
    xs, ys = [], []
    for (emb, times), (a, b) in zip(embedder.timestamp_embeddings(waves), spans):
        xs.append(emb)
        ys.append(((times / 1000 >= a) & (times / 1000 < b)).float())
    x, y = torch.cat(xs).double(), torch.cat(ys).double()
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / std
    weight = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    positive = float(y.mean().clamp(1e-3, 1 - 1e-3))
    optimizer = torch.optim.Adam([weight, bias], lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        logits = x @ weight + bias
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, y, pos_weight=torch.tensor((1 - positive) / positive, dtype=torch.float64)) + 1e-3 * weight.square().sum()
        loss.backward()
        optimizer.step()
    weight, bias = weight.detach(), bias.detach()

    def score(embeddings) -> np.ndarray:
        z = (torch.as_tensor(np.asarray(embeddings), dtype=torch.float64) - mean) / std
        return (z @ weight + bias).numpy()

    return score


def needle_rank(score, embeddings_npz: Path, needle_start: float) -> int:
    """How many timestamps outside the chirp score above its best one (0: found)."""
    import numpy as np

    data = np.load(embeddings_npz)
    times = data["timestamps_ms"] / 1000
    scores = score(data["timestamp_embeddings"])
    inside = (times >= needle_start) & (times < needle_start + NEEDLE_S)
    if not inside.any():
        raise ValueError("no timestamp lies inside the chirp")
    return int((scores[~inside] > scores[inside].max()).sum())


def embed_once(audio: Path, model: str, out: Path, whole: bool, timeout: float) -> dict:
    """One ``ssamba embed`` process: ``{"status", "seconds", "peak_mb", "reason"}``."""
    started = time.perf_counter()
    cmd = [sys.executable, "-c", CLI_PEAK_RSS_PROGRAM, "embed", str(audio), "--checkpoint", model, "--out", str(out),
           "--no-progress", "--overwrite", *(["--whole"] if whole else [])]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": time.perf_counter() - started, "peak_mb": None,
                "reason": f"no result after {timeout:g} s"}
    seconds = time.perf_counter() - started
    if proc.returncode != 0 or "peak_rss_mb" not in proc.stdout:
        tail = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return {"status": "error", "seconds": seconds, "peak_mb": None,
                "reason": (tail[-1] if tail else f"exit code {proc.returncode}")[:300]}
    return {"status": "ok", "seconds": seconds, "peak_mb": float(proc.stdout.split("peak_rss_mb")[1]), "reason": ""}


def reach_seconds(plain: Path, with_needle: Path, needle_start: float) -> float:
    """How far (s) beyond the chirp's span the timestamp embeddings of the two files still
    differ by more than ``REACH_THRESHOLD`` of their norm (the larger side)."""
    import numpy as np

    a, b = np.load(plain), np.load(with_needle)
    times = a["timestamps_ms"] / 1000
    change = np.linalg.norm(b["timestamp_embeddings"] - a["timestamp_embeddings"], axis=1)
    scale = np.linalg.norm(a["timestamp_embeddings"], axis=1).clip(min=1e-12)
    moved = times[change / scale > REACH_THRESHOLD]
    if moved.size == 0:
        return 0.0
    return float(max(0.0, needle_start - moved.min(), moved.max() - (needle_start + NEEDLE_S)))


def materialise(model: str, folder: Path) -> str:
    """A preset name becomes a saved model initialised with seed 0 (every run, and both
    files of a needle pair, see the same weights); anything else is passed on as is."""
    import torch

    from ..models import create_model, list_models, save_model

    if model not in list_models():
        return model
    torch.manual_seed(0)
    save_model(create_model(model), folder / model)
    return str(folder / model)


def run(args) -> int:
    modes = [m == "whole" for m in args.modes]
    rows, stopped = [], set()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sources = {model: materialise(model, tmp / "models") for model in args.models}
        detectors = {model: needle_detector(path) for model, path in sources.items()} if args.needle else {}
        for minutes in args.minutes:
            audio = tmp / f"{minutes:g}min.flac"
            needle_start = write_haystack(audio, minutes, args.rate, args.channels)
            needle_audio = None
            if args.needle:
                needle_audio = tmp / f"{minutes:g}min-needle.flac"
                write_haystack(needle_audio, minutes, args.rate, args.channels, needle=True)
            for model in args.models:
                for whole in modes:
                    key = (model, whole)
                    row = {"model": model, "mode": "whole" if whole else "windows", "minutes": minutes}
                    if key in stopped:
                        rows.append({**row, "status": "skipped", "reason": "a shorter file timed out"})
                        print(f"{model} ({row['mode']}), {minutes:g} min: skipped (a shorter file timed out)",
                              flush=True)
                        continue
                    out = tmp / "out" / f"{len(rows)}"
                    result = embed_once(audio, sources[model], out, whole, args.timeout)
                    if result["status"] == "timeout":
                        stopped.add(key)
                    if result["status"] == "ok" and needle_audio is not None:
                        second = embed_once(needle_audio, sources[model], out / "needle", whole, args.timeout)
                        if second["status"] == "ok":
                            found = out / "needle" / f"{needle_audio.stem}.npz"
                            result["reach_s"] = reach_seconds(out / f"{audio.stem}.npz", found, needle_start)
                            result["needle_rank"] = needle_rank(detectors[model], found, needle_start)
                    rows.append({**row, **result})
                    print(_line(rows[-1]), flush=True)
            for path in (audio, needle_audio):
                if path is not None:
                    path.unlink()
    print()
    print(f"ssamba embed on seeded noise-modulated tones, {args.rate} Hz x{args.channels}; one fresh process per "
          "run; peak = VmHWM of that process (the first ~300 MB are PyTorch, the model and the file's samples)")
    print(_table(rows, args.minutes, args.needle))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        fields = ["model", "mode", "minutes", "status", "seconds", "peak_mb", "reach_s", "needle_rank", "reason"]
        with open(out / "long_audio.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        print(f"\nwrote {out / 'long_audio.csv'}")
    return 0


def _line(row: dict) -> str:
    head = f"{row['model']} ({row['mode']}), {row['minutes']:g} min:"
    if row["status"] != "ok":
        return f"{head} {row['status']} ({row['reason']})"
    reach = (f", needle reach {row['reach_s']:.1f} s, detector rank {row['needle_rank']}"
             f" ({'found' if row['needle_rank'] == 0 else 'missed'})" if "reach_s" in row else "")
    return f"{head} {row['seconds']:.1f} s, peak {row['peak_mb']:.0f} MB{reach}"


def _table(rows: list[dict], minutes: list[float], needle: bool) -> str:
    width = 10 + (14 if needle else 0)
    labels = list(dict.fromkeys((r["model"], r["mode"]) for r in rows))
    name = max([12, *(len(f"{m} ({mode})") for m, mode in labels)]) + 2
    head = f"{'model (mode)':<{name}}" + "".join(f"{f'{m:g} min':>{width + 8}}" for m in minutes)
    lines = [head, " " * name + "".join(f"{'MB':>8} {'s':>7}" + (f" {'reach s':>8} {'rank':>4}" if needle else "") + " " * 2
                                      for _ in minutes)]
    for label in labels:
        cells = []
        for m in minutes:
            r = next((r for r in rows if (r["model"], r["mode"]) == label and r["minutes"] == m), None)
            if r is None or r["status"] != "ok":
                cells.append(f"{(r or {}).get('status', '-'):>{width + 8}}")
            else:
                reach = (f" {r['reach_s']:>8.1f} {r['needle_rank']:>4}" if "reach_s" in r
                         else (" " * 14 if needle else ""))
                cells.append(f"{r['peak_mb']:>8.0f} {r['seconds']:>7.1f}{reach}  ")
        lines.append(f"{label[0] + ' (' + label[1] + ')':<{name}}" + "".join(cells))
    return "\n".join(lines)
