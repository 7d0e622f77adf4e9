"""``ssamba bench train``: one pretraining step of the tiny presets on 1 s and 10 s inputs.

A step is the official joint objective (:class:`~ssamba.objectives.MaskedPatchModeling`
with its defaults: InfoNCE + 10 x MSE from two encoder passes with independent cluster
masks), ``backward()`` and an AdamW step over the encoder and both prediction heads.
The masked count scales with the input (the recipe's 400 of 512 patches by default).
Each configuration runs in a fresh process (:mod:`ssamba.benchmarks._worker`).

``--under-load`` times every configuration twice: on the machine as it is, then while
a second process (a PyTorch loop of matrix products on torch's default threads, like
another training job) keeps the cores busy; it prints the slowdown of each.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ..device import resolve_device
from .common import background_load, fmt, load1, mib, parse_spec, run_configuration

COLUMNS = ["model", "frames", "seconds", "tokens", "num_masked", "batch", "device", "precision", "threads", "status",
           "reason", "time_s", "time_min_s", "time_max_s", "runs", "warmup_runs", "cpu_util", "peak_extra_mb",
           "load1", "thread_policy", "malloc_policy", "loaded_time_s", "loaded_thread_policy", "slowdown"]

def padded_frames(config, frames: int) -> int:
    """``frames`` rounded up to whole time patches (16 for 16x16 patches)."""
    (_, kt), (_, st) = config.patch_size, config.patch_stride
    if frames <= kt:
        return kt
    return kt + -(-(frames - kt) // st) * st


def run(args) -> int:
    import csv

    try:
        specs = [parse_spec(s) for s in args.models]
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    load_start = load1()
    rows = []
    t_start = time.perf_counter()
    for frames_req in args.frames:
        for spec in specs:
            frames = padded_frames(spec.config, frames_req)
            print(f"[{time.perf_counter() - t_start:7.1f} s] {spec.label}, {frames} frames ...",
                  file=sys.stderr, flush=True)
            job = {"mode": "train", "preset": spec.preset, "overrides": spec.overrides, "frames": frames,
                   "batch": args.batch_size, "threads": args.threads, "warmup": args.warmup,
                   "repeats": args.repeats, "device": device, "seed": args.seed,
                   "mask_ratio": args.mask_ratio, "precision": args.precision}
            row = {"model": spec.label, "frames": frames, "seconds": frames_req / 100,
                   "batch": args.batch_size, "device": device, "precision": args.precision,
                   "load1": round(load1(), 2)}
            res = run_configuration(job, args.timeout)
            row.update({k: v for k, v in res.items() if k in COLUMNS})
            if res["status"] == "ok":
                row["peak_extra_mb"] = mib(res["peak_extra_bytes"])
                if args.under_load:
                    with background_load():
                        loaded = run_configuration(job, args.timeout)
                    if loaded["status"] == "ok":
                        row["loaded_time_s"] = loaded["time_s"]
                        row["loaded_thread_policy"] = loaded.get("thread_policy")
                        row["slowdown"] = round(loaded["time_s"] / res["time_s"], 3)
            rows.append(row)
    elapsed = time.perf_counter() - t_start

    threads = next((r["threads"] for r in rows if r.get("threads")), args.threads)
    print(f"pretraining step (masked patch modeling: InfoNCE + 10 x MSE, two encoder passes, backward, "
          f"AdamW), batch {args.batch_size}, {args.precision}, device {device}, {threads} threads, {os.cpu_count()} CPUs; "
          f"warm-up {args.warmup}, median of {args.repeats} steps; one fresh process per configuration; "
          f"cpu = process CPU s per wall s while timed (~threads when uncontended); "
          f"load average {load_start:.2f} at start, {load1():.2f} at end; {elapsed:.0f} s in all")
    print(f"\n{'model':<28} {'input':>16} {'tokens':>7} {'masked':>6} {'step s':>8} {'min':>8} {'max':>8} "
          f"{'cpu':>5} {'peak MiB':>9}  status")
    for r in rows:
        note = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}"
        label = f"{r['seconds']:g} s ({r['frames']} fr)"
        print(f"{r['model']:<28} {label:>16} {fmt(r.get('tokens'), 'd'):>7} {fmt(r.get('num_masked'), 'd'):>6} "
              f"{fmt(r.get('time_s'), '8.3f'):>8} {fmt(r.get('time_min_s'), '8.3f'):>8} "
              f"{fmt(r.get('time_max_s'), '8.3f'):>8} {fmt(r.get('cpu_util'), '5.2f'):>5} "
              f"{fmt(r.get('peak_extra_mb'), '9.1f'):>9}  {note}")
    first = specs[0].label
    for other in specs[1:]:
        for frames_req in args.frames:
            a = next((r for r in rows if r["model"] == first and r["seconds"] == frames_req / 100), None)
            b = next((r for r in rows if r["model"] == other.label and r["seconds"] == frames_req / 100), None)
            if a and b and a["status"] == b["status"] == "ok":
                ratio = a["time_s"] / b["time_s"]
                verdict = "faster" if ratio < 1 else "slower"
                print(f"ratio {first} / {other.label} at {frames_req / 100:g} s: {ratio:.3f} "
                      f"({first} {verdict})")
    if args.under_load:
        print("\nunder load (a second process running PyTorch matrix products on its default threads):")
        for r in rows:
            if r.get("slowdown") is not None:
                print(f"slowdown {r['model']} at {r['seconds']:g} s: {r['slowdown']:.2f}x "
                      f"({r['time_s']:.3f} s -> {r['loaded_time_s']:.3f} s; OpenMP wait policy "
                      f"{r.get('thread_policy')} -> {r.get('loaded_thread_policy')}, see ssamba.threads)")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "train_bench.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS})
        print(f"\nwrote {out / 'train_bench.csv'}")
    return 0
