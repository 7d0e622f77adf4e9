"""``ssamba bench onnx``: onnxruntime against PyTorch on exported encoders.

Each preset (random weights, seeded) is exported as ``ssamba export`` exports it, then
onnxruntime (CPU) and PyTorch run the same random spectrograms at each length; the table
gives the largest difference, both median times and their ratio. Timings are printed,
never asserted.
"""

from __future__ import annotations

import csv
import sys
import tempfile
import time
from pathlib import Path

COLUMNS = ["model", "frames", "tokens", "max_abs_diff", "max_rel_diff", "torch_s", "onnxruntime_s", "ratio"]


def run(args) -> int:
    import torch

    from ..interfaces.export import MIN_FRAMES, check_onnx, export_onnx
    from ..models import create_model

    if any(t < MIN_FRAMES for t in args.frames):
        raise ValueError(f"--frames must be at least {MIN_FRAMES} (two 16-frame patch columns)")
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ssamba-bench-onnx-") as tmp:
        for preset in args.models:
            torch.manual_seed(args.seed)
            model = create_model(preset).eval()
            print(f"[{time.perf_counter() - start:6.1f} s] exporting {preset} ...", file=sys.stderr, flush=True)
            path = export_onnx(model, Path(tmp) / f"{preset}.onnx")
            for r in check_onnx(path, model, args.frames, batch=args.batch_size, repeats=args.repeats,
                                seed=args.seed):
                rows.append({"model": preset, **r, "ratio": r["onnxruntime_s"] / r["torch_s"]})
    print(f"\nonnxruntime (CPU) vs PyTorch eager, forward_features, batch {args.batch_size}, fp32, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} after a warm-up, random weights "
          f"(seed {args.seed}); {time.perf_counter() - start:.0f} s in all\n")
    print(f"{'model':<20} {'frames':>7} {'tokens':>7} {'max |diff|':>11} {'torch s':>9} {'onnxruntime s':>14} "
          f"{'ort / torch':>12}")
    for r in rows:
        print(f"{r['model']:<20} {r['frames']:>7} {r['tokens']:>7} {r['max_abs_diff']:>11.2e} {r['torch_s']:>9.4f} "
              f"{r['onnxruntime_s']:>14.4f} {r['ratio']:>11.2f}x")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "onnx_bench.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        print(f"\nwrote {out / 'onnx_bench.csv'}")
    return 0
