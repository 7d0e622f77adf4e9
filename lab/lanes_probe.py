"""Channels across the vector lanes: a probe of the scan forward's other layout.

The shipped kernel holds one channel's 16 states in a vector: each step's output C.h is
a horizontal sum, collected per chunk (``reduce16``), and softplus, the gate and the
moves of u, delta, z and out are per-chunk work on top of the state updates, which run
at the arithmetic bound (``ssamba bench scan``). ``lab/lanes_probe.cpp`` puts 16
channels across the lanes instead (one vector per state; C.h accumulates vertically;
softplus and the gate are one vector per step) on token-major ``(batch, L, dim)``
operands, forward only. This script checks both against the float64 reference, then
times, alternated in one process: the shipped forward (no checkpoints), the probe, the
probe with softplus and the gate left out (timing only), and the bound for the same
number of state updates.

    python lab/lanes_probe.py [--shapes 8x384x57 8x384x513 1x384x2048] [--repeats 25]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time
from pathlib import Path


def load_probe():
    """The probe library (built and cached like the kernel)."""
    from ssamba.ops import build

    lib = build.load(Path(__file__).with_name("lanes_probe.cpp"))
    for name in ("probe_fwd_lanes", "probe_fwd_lanes_noact"):
        fn = getattr(lib, name)
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p] * 9 + [ctypes.c_int64] * 3 + [ctypes.c_int]
    return lib


def measure(shape: str, repeats: int, threads: int, probe=None) -> dict:
    """For ``BxDxL``: ``err_shipped`` / ``err_lanes`` (largest difference from the float64
    reference over its largest magnitude) and the median milliseconds ``shipped``,
    ``lanes``, ``noact`` and ``bound``."""
    import torch

    from ssamba.benchmarks.scan import bound_benchmark
    from ssamba.ops import scan_cpu
    from ssamba.ops.scan_reference import selective_scan_reference

    probe = probe or load_probe()
    lib = scan_cpu._require_library()
    ptr = scan_cpu._ptr
    batch, dim, length = (int(v) for v in shape.split("x"))
    gen = torch.Generator().manual_seed(0)
    u, z = (torch.randn(batch, dim, length, generator=gen) for _ in range(2))
    delta = 0.5 * torch.randn(batch, dim, length, generator=gen) - 2.0
    A = -(torch.rand(dim, 16, generator=gen) + 0.5)
    B, C = (torch.randn(batch, 16, length, generator=gen) for _ in range(2))
    D, bias = torch.randn(dim, generator=gen), 0.1 * torch.randn(dim, generator=gen)
    u32, delta32, A_p, B_rows, C_rows, D_skip, z32, bias32, n_p = scan_cpu._prepare(u, delta, A, B, C, D, z, bias)
    nthreads, starts, *_ = scan_cpu._partition(batch, dim, length)
    out = torch.empty_like(u32)
    u_t, delta_t, z_t = (t.transpose(1, 2).contiguous() for t in (u32, delta32, z32))
    A_t, out_t = A.t().contiguous(), torch.empty_like(u_t)
    lanes_args = (ptr(u_t), ptr(delta_t), ptr(A_t), ptr(B_rows), ptr(C_rows), ptr(D), ptr(z_t), ptr(bias),
                  ptr(out_t), batch, dim, length, threads)

    def shipped():
        if lib.ssamba_scan_fwd(ptr(u32), ptr(delta32), ptr(A_p), ptr(B_rows), ptr(C_rows), ptr(D_skip), ptr(z32),
                               ptr(bias32), 1, 0, ptr(out), None, None, None, batch, dim, length, n_p, nthreads,
                               ptr(starts)):
            raise RuntimeError("the shipped forward failed")

    def lanes():
        if probe.probe_fwd_lanes(*lanes_args):
            raise RuntimeError("the probe failed (d_inner must be a multiple of 16)")

    def noact():
        probe.probe_fwd_lanes_noact(*lanes_args)

    shipped(), lanes()
    ref = selective_scan_reference(*(t.double() for t in (u, delta, A, B, C, D, z, bias)), delta_softplus=True)
    scale = ref.abs().max()
    found = {"err_shipped": float((out.double() - ref).abs().max() / scale),
             "err_lanes": float((out_t.transpose(1, 2).double() - ref).abs().max() / scale)}
    times: dict[str, list[float]] = {"shipped": [], "lanes": [], "noact": [], "bound": []}
    updates = batch * dim * length  # 16-lane vector updates (d_state 16)
    noact()
    bound_benchmark(updates, 1, threads)
    for _ in range(repeats):
        for key, fn in (("shipped", shipped), ("lanes", lanes), ("noact", noact),
                        ("bound", lambda: bound_benchmark(updates, 1, threads))):
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    found.update({key: statistics.median(v) * 1e3 for key, v in times.items()})
    return found


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=["8x384x57", "8x384x513", "1x384x2048"], metavar="BxDxL",
                   help="batch x d_inner (a multiple of 16) x length; default: the 1 s and 10.24 s training "
                        "batches, the scan benchmark's length")
    p.add_argument("--repeats", type=int, default=25, help="calls per version, alternated")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    probe = load_probe()
    print(f"forward, d_state 16, softplus, D and gate; {args.threads} threads; median of {args.repeats}, alternated")
    print(f"{'shape':>11} {'shipped ms':>10} {'lanes ms':>9} {'lanes/shipped':>13} {'no act ms':>9} {'bound ms':>9}"
          f" {'shipped':>8} {'lanes':>6} {'max rel err':>12}")
    for shape in args.shapes:
        f = measure(shape, args.repeats, args.threads, probe)
        err = max(f["err_shipped"], f["err_lanes"])
        print(f"{shape:>11} {f['shipped']:10.3f} {f['lanes']:9.3f} {f['lanes'] / f['shipped']:12.2f}x "
              f"{f['noact']:9.3f} {f['bound']:9.3f} {f['bound'] / f['shipped']:7.0%} {f['bound'] / f['lanes']:6.0%}"
              f" {err:12.1e}")
        if err > 1e-4:
            raise SystemExit(f"lanes_probe: {shape}: output differs from the reference by {err:.1e}")
    print("shipped, lanes: % of the bound's throughput; no act: the probe without softplus and the gate")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
