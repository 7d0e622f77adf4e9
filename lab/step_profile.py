"""Where one pretraining step goes: ``torch.profiler`` over a few steps of the official objective.

The step of ``ssamba bench train`` (InfoNCE + 10 x MSE from two encoder passes,
backward, AdamW; the training allocator policy), for one preset and input length, timed
first without the profiler (median of ``--steps``), then profiled over ``--profile``
steps: the operations with the most own CPU time, per step. The kernels called through
ctypes appear inside their operators and autograd functions
(``ssamba::selective_scan_cpu_fwd`` / ``_bwd``, ``_ConvSiLU``...). The profiler adds overhead: compare
the shares, not the times.

    python lab/step_profile.py --preset ssamba_tiny --frames 112 [--batch-size 8]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main(argv=None) -> int:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from ssamba.allocator import apply_allocator_policy
    from ssamba.benchmarks.steps import pretraining_step
    from ssamba.models import create_model

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="ssamba_tiny")
    p.add_argument("--frames", type=int, default=112, help="input frames (112 = 1 s padded to whole patches)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="timed steps without the profiler")
    p.add_argument("--profile", type=int, default=3, help="profiled steps")
    p.add_argument("--rows", type=int, default=20, help="operations listed")
    args = p.parse_args(argv)
    apply_allocator_policy()
    torch.manual_seed(0)
    model = create_model(args.preset, input_tdim=args.frames)
    spec = torch.randn(args.batch_size, args.frames, model.config.input_fdim, generator=torch.Generator().manual_seed(0))
    step, _ = pretraining_step(model, spec)

    step()  # warm-up
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(f"{args.preset}, {args.frames} frames, batch {args.batch_size}: step {statistics.median(times):.3f} s "
          f"(median of {args.steps}, no profiler)")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.profile):
            step()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"profiled: {total / 1e6 / args.profile:.3f} s of own CPU time per step\n")
    print(f"{'operation':<48} {'ms/step':>9} {'share':>6} {'calls/step':>10}")
    for e in events[:args.rows]:
        print(f"{e.key[:48]:<48} {e.self_cpu_time_total / 1e3 / args.profile:9.1f} "
              f"{e.self_cpu_time_total / total:6.1%} {e.count / args.profile:10.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
