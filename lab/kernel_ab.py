"""A/B two versions of the CPU scan kernel's source in one process, calls alternated.

On a shared or virtual machine, timings drift by tens of percent between runs of the
same code (``ssamba bench scan`` of one commit measured forward+backward at 10.7 and
15.2 ms minutes apart). Loading both libraries into one process and alternating their
calls on the same operands puts the two versions under the same conditions, so their
ratio is meaningful where their absolute times are not. For each length and direction
it prints the median time of each version's forward and backward (forward recomputed
before every backward, as training does) and the ratio B / A.

    git show HEAD~1:src/ssamba/ops/csrc/selective_scan_cpu.cpp > /tmp/old.cpp
    python lab/kernel_ab.py /tmp/old.cpp src/ssamba/ops/csrc/selective_scan_cpu.cpp --threads 2

The sources must keep the kernel's C ABI (``ssamba_scan_fwd`` / ``ssamba_scan_bwd``) and
compile against ``ops/csrc/scan_simd.h`` (they are built with ``-I`` that folder).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def main(argv=None) -> int:
    import torch

    from ssamba.ops import build, scan_cpu

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path, help="source of version A (e.g. the old kernel)")
    p.add_argument("b", type=Path, help="source of version B")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=25, help="calls per version, alternated")
    p.add_argument("--shapes", nargs="+", default=["8x384x57", "8x384x513", "1x384x2048"], metavar="BxDxL",
                   help="batch x d_inner x length (d_state 16); default: 1 s and 10.24 s training batches, "
                        "the scan benchmark's length")
    args = p.parse_args(argv)
    for path in (args.a, args.b):
        if not path.is_file():
            p.error(f"{path}: no such source file")
    libs = [scan_cpu._configure(build.load(path)) for path in (args.a, args.b)]
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    ptr = scan_cpu._ptr
    for shape in args.shapes:
        batch, dim, length = (int(v) for v in shape.split("x"))
        n = 16
        u, z, gout = (torch.randn(batch, dim, length, generator=gen) for _ in range(3))
        delta = 0.5 * torch.randn(batch, dim, length, generator=gen) - 2.0
        A = -(torch.rand(dim, n, generator=gen) + 0.5)
        B, C = torch.randn(batch, n, length, generator=gen), torch.randn(batch, n, length, generator=gen)
        D, bias = torch.randn(dim, generator=gen), 0.1 * torch.randn(dim, generator=gen)
        u32, delta32, A_p, B_rows, C_rows, D_skip, z32, bias32, n_p = scan_cpu._prepare(u, delta, A, B, C, D, z, bias)
        out = torch.empty_like(u32)
        chunk = min(lib.ssamba_scan_chunk_size() for lib in libs)  # room for either version's checkpoints
        ckpt = torch.empty(batch * dim, -(-length // chunk), n_p)
        threads, starts, slot_base, _, nslots = scan_cpu._partition(batch, dim, length)
        du, ddelta, dz = (torch.empty_like(u32) for _ in range(3))
        dA = torch.empty(batch, dim, n_p)
        dBs, dCs = torch.zeros(nslots, length, n_p), torch.zeros(nslots, length, n_p)
        dD, dbias = torch.empty(batch, dim), torch.empty(batch, dim)
        common = (ptr(u32), ptr(delta32), ptr(A_p), ptr(B_rows), ptr(C_rows), ptr(D_skip), ptr(z32), ptr(bias32), 1)

        def forward(lib, reverse):
            lib.ssamba_scan_fwd(*common, reverse, ptr(out), ptr(ckpt), None, None, batch, dim, length, n_p, threads,
                                ptr(starts))

        def backward(lib, reverse):
            lib.ssamba_scan_bwd(*common, reverse, ptr(ckpt), ptr(gout), ptr(du), ptr(ddelta), ptr(dA), ptr(dBs),
                                ptr(dCs), ptr(dD), ptr(dz), ptr(dbias), batch, dim, length, n_p, threads, ptr(starts),
                                ptr(slot_base))

        for name, fn in (("forward", forward), ("backward", backward)):
            for reverse in (0, 1):
                times: list[list[float]] = [[], []]
                for _ in range(args.repeats):
                    for i, lib in enumerate(libs):
                        if fn is backward:
                            forward(lib, reverse)  # this version's checkpoints, warm as in training
                        t0 = time.perf_counter()
                        fn(lib, reverse)
                        times[i].append(time.perf_counter() - t0)
                a, b = (statistics.median(t) * 1e3 for t in times)
                print(f"{shape:>12} {name:<8} {'reverse' if reverse else 'forward':<7} "
                      f"A {a:8.3f} ms  B {b:8.3f} ms  B/A {b / a:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
