"""A/B the CPU scan's registration under eager autograd, in one process.

B is the package: eager training goes through the registered operators
(``ssamba::selective_scan_cpu_fwd`` / ``_bwd``, ``torch.library``), the scan's one
registration. A is the formulation the package had before it, kept here for the
comparison: a ``torch.autograd.Function`` calling the same kernel functions directly,
without the operators' dispatch. Alternates pretraining steps of ``ssamba bench train``'s
step between the two, each first in every other round, and prints the median step time of
each and the ratio B / A.

    python lab/scan_op_ab.py --frames 1024 --batch-size 2 --steps 6
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time


def function_backend():
    """The scan's eager-autograd formulation before the operators were its one
    registration: an autograd.Function over the kernel's forward and backward."""
    import torch

    from ssamba.ops import scan_cpu

    class EagerScan(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
            out, ckpt = scan_cpu._scan_forward((u, delta, A, B, C, D, z, delta_bias), delta_softplus, reverse,
                                               save=True)
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ckpt)
            ctx.flags = (bool(delta_softplus), bool(reverse))
            return out

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, gout):
            grads = scan_cpu._backward_kernel(gout, *ctx.saved_tensors, *ctx.flags)
            return (*[g if need else None for g, need in zip(grads, ctx.needs_input_grad)], None, None)

    def scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, reverse=False):
        tensors = (u, delta, A, B, C, D, z, delta_bias)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
            return EagerScan.apply(*tensors, delta_softplus, reverse)
        return scan_cpu.selective_scan_cpu(*tensors, delta_softplus, reverse)

    return scan


def main(argv=None) -> int:
    import torch

    from ssamba import ops
    from ssamba.benchmarks.steps import pretraining_step
    from ssamba.models import create_model

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="ssamba_tiny")
    p.add_argument("--frames", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--steps", type=int, default=6, help="timed steps per version, alternated")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = create_model(args.preset, input_tdim=args.frames)
    spec = torch.randn(args.batch_size, args.frames, model.config.input_fdim)
    step, _ = pretraining_step(model, spec, 400 / 512, 0)
    package = ops._BACKENDS["cpu"]
    versions = {"A": dataclasses.replace(package, fn=function_backend()), "B": package}
    times: dict[str, list[float]] = {"A": [], "B": []}
    try:
        for i in range(args.steps + 1):  # the first round warms up
            for key in ("AB" if i % 2 else "BA"):
                ops._BACKENDS["cpu"] = versions[key]
                t0 = time.perf_counter()
                step()
                if i:
                    times[key].append(time.perf_counter() - t0)
    finally:
        ops._BACKENDS["cpu"] = package
    a, b = statistics.median(times["A"]), statistics.median(times["B"])
    print(f"{args.preset} pretraining step, {args.frames} frames, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, median of {args.steps}: A (autograd.Function) {a:.3f} s  "
          f"B (the registered operators) {b:.3f} s  B/A {b / a:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
