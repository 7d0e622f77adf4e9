"""How fast an SSAMBA pretraining step could be on this CPU, against SSAST's actual step.

``ssamba bench train``'s step (the official objective: two encoder passes, InfoNCE + 10 x
MSE, backward, AdamW; batch 8, the training allocator policy) is built for an SSAMBA and
an SSAST preset at each input length, and three things are measured in one process:

1. both models' step times, their steps alternated (median of ``--steps``);
2. SSAMBA's matrix products alone: every ``mm`` / ``bmm`` / ``addmm`` / ``baddbmm`` of
   one step is recorded (shapes, strides, dtypes) and replayed, timed, on fresh tensors
   of those layouts. These are the projections' multiply-adds, which the model's shapes
   fix, at the rate PyTorch's BLAS reaches for them;
3. the scans' arithmetic floor: the 16-lane state updates of the step's forward scans,
   timed with ``ssamba bench scan``'s roofline micro-benchmark (the forward's per-state
   arithmetic on registers, no memory traffic, ``ssamba.benchmarks.scan.bound_benchmark``),
   counted twice: the backward recomputes every forward state from its checkpoint, and
   its reverse walk is counted as free;
4. SSAMBA's scan kernels alone, as they run: every forward and backward call of the CPU
   scan in one step is recorded (copies of its operands) and replayed, timed.

The sum of 2 and 3 is a floor for SSAMBA's step with everything else (conv, norms, losses,
optimizer, the backward's reverse walk, all memory traffic) free: the floor's ratio to
SSAST's step is the best step-time ratio this machine allows. The sum of 2 and 4 is the
step with everything but the products and today's scan kernel free: what any fusion of
the other operations (conv, gate, norms, flips, losses, optimizer) could reach at most.

    python lab/train_floor.py [--frames 100 1024] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time


def build_step(preset: str, frames: int, batch: int, with_model: bool = False):
    """The pretraining step of ``ssamba bench train`` for ``preset`` on ``frames`` frames
    (:func:`ssamba.benchmarks.steps.pretraining_step`), as a function (and the model it
    trains, ``(step, model)``, with ``with_model``)."""
    import torch

    from ssamba.benchmarks.steps import pretraining_step
    from ssamba.models import create_model

    torch.manual_seed(0)
    model = create_model(preset, input_tdim=frames)
    spec = torch.randn(batch, frames, model.config.input_fdim, generator=torch.Generator().manual_seed(0))
    step, _ = pretraining_step(model, spec)
    return (step, model) if with_model else step


class TensorLayout(tuple):
    """``(shape, stride, dtype)`` of a recorded tensor argument."""

    def __new__(cls, shape, stride, dtype):
        return super().__new__(cls, (shape, stride, dtype))

    def make(self):
        """A tensor of this layout, normal random values (expanded dimensions share them)."""
        import torch

        shape, stride, dtype = self
        size = 1 + sum((n - 1) * st for n, st in zip(shape, stride) if n > 0)
        return torch.randn(size, dtype=dtype).as_strided(shape, stride)


def record(step):
    """Run ``step`` once; return its matrix products ``[(op, [(shape, stride, dtype) per
    tensor argument], other args)]``, the scan kernel's forward calls' vector updates, and
    its scan kernel calls ``[(kernel function, copied arguments)]`` in call order."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from ssamba.ops import scan_cpu

    aten = torch.ops.aten
    products_ops = {aten.mm.default, aten.bmm.default, aten.addmm.default, aten.baddbmm.default}
    products = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in products_ops:
                layout = [TensorLayout(tuple(a.shape), tuple(a.stride()), a.dtype) if isinstance(a, torch.Tensor)
                          else a for a in args]
                products.append((func, layout, dict(kwargs)))
            return func(*args, **kwargs)

    updates = [0]
    real_forward = scan_cpu._forward

    def counting_forward(lib, operands, *a, **k):
        u, n_padded = operands[0], operands[8]
        updates[0] += u.numel() * (n_padded // 16)
        return real_forward(lib, operands, *a, **k)

    def copied(args):
        return tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args)

    scans = []
    real_scan_forward, real_scan_backward = scan_cpu._scan_forward, scan_cpu._backward_kernel

    def recording_scan_forward(tensors, *flags, **kw):
        scans.append((real_scan_forward, (copied(tensors), *flags), dict(kw)))
        return real_scan_forward(tensors, *flags, **kw)

    def recording_scan_backward(*args):
        scans.append((real_scan_backward, copied(args), {}))
        return real_scan_backward(*args)

    scan_cpu._forward = counting_forward
    scan_cpu._scan_forward, scan_cpu._backward_kernel = recording_scan_forward, recording_scan_backward
    try:
        with Recorder():
            step()
    finally:
        scan_cpu._forward = real_forward
        scan_cpu._scan_forward, scan_cpu._backward_kernel = real_scan_forward, real_scan_backward
    if not scans:
        raise RuntimeError("the step made no CPU scan kernel calls (is the kernel built?)")
    return products, updates[0], scans


def replay_scans_seconds(scans, repeats: int) -> float:
    """Median seconds of running the recorded scan kernel calls once each, in order."""
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        for fn, args, kwargs in scans:
            fn(*args, **kwargs)
        if i:  # the first round warms up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def replay_seconds(products, repeats: int) -> float:
    """Median seconds of running ``products`` once each on fresh tensors of their layouts."""
    calls = []
    for func, layout, kwargs in products:
        calls.append((func, [a.make() if isinstance(a, TensorLayout) else a for a in layout], kwargs))
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        for func, args, kwargs in calls:
            func(*args, **kwargs)
        if i:  # the first round warms up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(ssamba: str, ssast: str, frames: int, batch: int, steps: int) -> dict:
    """The figures of one input length (seconds): ``ssast``, ``ssamba`` (step times),
    ``products`` and ``products_calls`` (SSAMBA's matrix products replayed), ``scans`` (twice
    the forward scans at the arithmetic bound) and ``scan_updates``, ``floor``, ``kernels``
    and ``kernel_calls`` (the scan kernel calls replayed), ``with_kernels`` (products +
    kernels) and ``rest`` (the step less both)."""
    from ssamba.benchmarks.scan import bound_benchmark

    ssamba_step, ssast_step = build_step(ssamba, frames, batch), build_step(ssast, frames, batch)
    ssamba_step(), ssast_step()  # warm-up
    times: dict[str, list[float]] = {"ssamba": [], "ssast": []}
    for _ in range(steps):
        for key, step in (("ssamba", ssamba_step), ("ssast", ssast_step)):
            t0 = time.perf_counter()
            step()
            times[key].append(time.perf_counter() - t0)
    found = {key: statistics.median(values) for key, values in times.items()}
    products, updates, scans = record(ssamba_step)
    found.update(products=replay_seconds(products, steps), products_calls=len(products), scan_updates=updates,
                 kernels=replay_scans_seconds(scans, steps), kernel_calls=len(scans))
    del scans
    bound_benchmark(updates, 1)  # warm-up
    found["scans"] = 2 * statistics.median(bound_benchmark(updates, 1) for _ in range(steps))
    found["floor"] = found["products"] + found["scans"]
    found["with_kernels"] = found["products"] + found["kernels"]
    found["rest"] = found["ssamba"] - found["with_kernels"]
    return found


def main(argv=None) -> int:
    import torch

    from ssamba.allocator import apply_allocator_policy
    from ssamba.benchmarks.train import padded_frames
    from ssamba.models import get_config

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ssamba", default="ssamba_tiny")
    p.add_argument("--ssast", default="ssast_tiny_patch")
    p.add_argument("--frames", type=int, nargs="+", default=[100, 1024],
                   help="input lengths (padded to whole 16-frame patches, as bench train does)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="timed steps per model (alternated), and replays")
    args = p.parse_args(argv)
    apply_allocator_policy()
    print(f"pretraining step, batch {args.batch_size}, {torch.get_num_threads()} threads; median of {args.steps}")
    for asked in args.frames:
        frames = padded_frames(get_config(args.ssamba), asked)
        f = measure(args.ssamba, args.ssast, frames, args.batch_size, args.steps)
        print(f"\n{asked} frames ({asked / 100:g} s, padded to {frames})")
        print(f"  {'':<58} {'s':>7} {'/ SSAST':>8}")
        for name, key in ((f"{args.ssast} step", "ssast"), (f"{args.ssamba} step", "ssamba"),
                          (f"  its matrix products alone ({f['products_calls']} calls)", "products"),
                          (f"  its scans at the arithmetic bound, x2 ({f['scan_updates'] / 1e6:.1f} M updates)", "scans"),
                          ("  floor: products + scans at the bound", "floor"),
                          (f"  its scan kernel calls alone ({f['kernel_calls']} forward and backward)", "kernels"),
                          ("  products + scan kernels (all else free)", "with_kernels"),
                          ("  all else: the step less products and scan kernels", "rest")):
            print(f"  {name:<58} {f[key]:7.3f} {f[key] / f['ssast']:7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
