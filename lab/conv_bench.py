"""SiLU(depthwise conv) forward+backward: the C++ kernel against its PyTorch formulation.

Times ``ssamba.ops.conv.conv_silu`` under autograd (forward, then backward of a
fixed gradient) on one mixer direction's input, once through ``ssamba.ops.conv_cpu``
and once with the kernel switched off, alternating the two in one process so that both
see the same machine. Prints the median of each and their ratio per shape.

    python lab/conv_bench.py [--shapes 8x384x57 8x384x513] [--repeats 50]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main(argv=None) -> int:
    import torch

    from ssamba.ops.conv import conv_silu
    from ssamba.ops import conv_cpu

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=["8x384x57", "8x384x513"], metavar="BxCxL",
                   help="batch x inner channels x length; default: ssamba_tiny's 1 s and 10.24 s training batches")
    p.add_argument("--repeats", type=int, default=50, help="calls per path, alternated")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    available = conv_cpu.is_available
    for shape in args.shapes:
        batch, channels, length = (int(v) for v in shape.split("x"))
        x = torch.randn(batch, channels, length, generator=gen).requires_grad_()
        w = torch.randn(channels, 1, 4, generator=gen).requires_grad_()
        b = torch.randn(channels, generator=gen).requires_grad_()
        grad = torch.randn(batch, channels, length, generator=gen)
        if not available(x, w, b):
            p.error(f"the conv kernel does not build here: {conv_cpu._error}")

        def step(kernel: bool) -> float:
            conv_cpu.is_available = available if kernel else (lambda *a: False)
            try:
                t0 = time.perf_counter()
                conv_silu(x, w, b, True).backward(grad)
                return time.perf_counter() - t0
            finally:
                conv_cpu.is_available = available

        for kernel in (True, False):  # warm-up
            step(kernel)
        times = {True: [], False: []}
        for _ in range(args.repeats):
            for kernel in (True, False):
                times[kernel].append(step(kernel))
        k, t = (statistics.median(times[v]) * 1e3 for v in (True, False))
        print(f"{shape:>12}  kernel {k:8.3f} ms  pytorch {t:8.3f} ms  kernel/pytorch {k / t:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
