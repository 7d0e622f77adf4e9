"""``ssamba bench scan``: the fused CPU selective scan against pure-PyTorch scans.

The Mamba case: fp32, batch 1, d_inner 384, d_state 16, with delta_softplus,
delta_bias, D and z. Prints four tables:

1. forward time, reference vs the ``cpu`` backend, at each ``--lengths`` value;
2. forward+backward time at ``--backward-length``: the ``cpu`` backend vs the pure
   PyTorch paths (the reference loop, whose autograd is linear in L, and a log-depth
   Hillis-Steele parallel scan over L implemented here);
3. the forward kernel against this CPU's bound at ``--backward-length``: the bound is
   measured by :func:`bound_benchmark`, which runs the kernel's
   per-state-update arithmetic (the vector exp2 polynomial, ``h = a*h + dt*u*B`` and
   ``acc += C*h``) on register-resident state with no memory traffic, for the same
   number of updates on the same number of threads;
4. peak extra memory of the ``cpu`` backend at the largest length: the bytes it
   allocates (counted analytically from the kernel's layout) and the peak-RSS increase
   measured in a fresh subprocess, next to the size of one (B, L, D, N) fp32 tensor.

Timings: warm-up, then the median of ``--repeats`` runs (``--ref-repeats`` for the
slow reference / Hillis-Steele paths). Run: ``ssamba bench scan``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ssamba.ops import build, scan_cpu, selective_scan

from ..errors import UserError
from ..timing import timeit

DIM, D_STATE, BATCH = 384, 16, 1


def make_inputs(length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    # Mamba's initialisation: A = -(1..N), dt ~ softplus^-1 of [1e-3, 1e-1].
    dt = torch.exp(torch.rand(DIM, generator=g) * (torch.log(torch.tensor(0.1)) - torch.log(torch.tensor(1e-3))) + torch.log(torch.tensor(1e-3)))
    return dict(
        u=r(BATCH, DIM, length),
        delta=0.1 * r(BATCH, DIM, length),
        A=-torch.arange(1, D_STATE + 1, dtype=torch.float32).repeat(DIM, 1),
        B=r(BATCH, D_STATE, length),
        C=r(BATCH, D_STATE, length),
        D=torch.ones(DIM),
        z=r(BATCH, DIM, length),
        delta_bias=dt + torch.log(-torch.expm1(-dt)),
    )


def hillis_steele_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Pure-PyTorch log-depth parallel scan (Hillis-Steele over L); differentiable."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    a = torch.exp(delta.unsqueeze(-1) * A[:, None, :])  # (B, D, L, N)
    b = (delta * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)  # (B, D, L, N)
    length, offset = u.shape[-1], 1
    while offset < length:  # combine (a1, b1) then (a2, b2): (a1 a2, a2 b1 + b2)
        a_prev = F.pad(a[:, :, :-offset], (0, 0, offset, 0), value=1.0)
        b_prev = F.pad(b[:, :, :-offset], (0, 0, offset, 0), value=0.0)
        b = a * b_prev + b
        a = a * a_prev
        offset *= 2
    y = torch.einsum("bdln,bnl->bdl", b, C)
    if D is not None:
        y = y + u * D[:, None]
    if z is not None:
        y = y * F.silu(z)
    return y


def fwd(backend: str, x):
    def run():
        with torch.no_grad():
            selective_scan(**x, delta_softplus=True, backend=backend)

    return run


def fwd_bwd(fn, x):
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    grad_out = torch.randn(x["u"].shape, generator=torch.Generator().manual_seed(1))

    def run():
        for v in leaves.values():
            v.grad = None
        fn(**leaves, delta_softplus=True).backward(grad_out)

    return run


def kernel_bytes(batch: int, dim: int, length: int, d_state: int, threads: int) -> dict[str, int]:
    """Bytes the cpu backend allocates beyond inputs and outputs (fp32 inputs)."""
    chunk, lanes = scan_cpu.chunk_size(), scan_cpu.load_library().ssamba_scan_lanes()
    np_ = -(-d_state // lanes) * lanes
    nv = np_ // lanes
    nchunks = -(-length // chunk)
    per_thread = ((2 * chunk + 1) * nv + 3 * chunk + 6 * nv) * lanes * 4 + 12 * chunk * 4
    slots = min(threads, batch * dim) + batch
    return {
        "B, C transposed to (B, L, N)": 2 * batch * length * np_ * 4,
        "state checkpoints (B, D, L/chunk, N)": batch * dim * nchunks * np_ * 4,
        "thread-local chunk buffers": threads * per_thread,
        "backward dB/dC per-thread slots": 2 * slots * length * np_ * 4,
        "backward dA/dD/dbias partials (B, D, N)": batch * dim * (np_ + 2) * 4,
    }


_MEMORY_CHILD = r"""
import json, sys, torch
from ssamba.benchmarks.scan import make_inputs
from ssamba.ops import scan_cpu, selective_scan
torch.set_num_threads({threads})
scan_cpu.load_library()
mode = {mode!r}


def run(length):
    x = make_inputs(length)
    if mode == "fwd+bwd":
        x = {{k: v.requires_grad_() for k, v in x.items()}}
    g = torch.ones(x["u"].shape)
    reset_peak()
    base = rss("VmRSS:")
    if mode == "fwd":
        with torch.no_grad():
            out = selective_scan(**x, delta_softplus=True, backend={backend!r})
    else:
        out = selective_scan(**x, delta_softplus=True, backend={backend!r})
        out.backward(g)
    return rss("VmHWM:") - base


def rss(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field))


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS counter (VmHWM) to the current RSS

run(256)  # page in code and start worker threads first: count only what the scan allocates
print(json.dumps({{"extra": run({length})}}))
"""


def measured_peak(length: int, backend: str, mode: str, threads: int) -> dict[str, int]:
    code = _MEMORY_CHILD.format(length=length, backend=backend, mode=mode, threads=threads)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mib(n: float) -> str:
    return f"{n / 2**20:8.1f} MiB" if n >= 2**20 else f"{n / 2**10:8.1f} KiB"



BOUND_SOURCE = Path(__file__).with_name("csrc") / "scan_bound.cpp"
_bound_libs: dict[str, ctypes.CDLL] = {}


def kernel_forward(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus: bool = False):
    """A function running only the CPU kernel's compiled forward on operands converted
    here, once: the kernel apart from the dtype and layout preparation that
    :func:`ssamba.ops.scan_cpu.selective_scan_cpu` does on every call. Calling the
    returned function returns the output."""
    lib = scan_cpu._require_library()
    operands = scan_cpu._prepare(u, delta, A, B, C, D, z, delta_bias)
    return lambda: scan_cpu._forward(lib, operands, delta_softplus, save=False)[0]


def _bound_library(target: str | None = None):
    """The bound micro-benchmark built for ``target`` (default: the kernel's target)."""
    target = target or build.cpu_target()
    if target not in _bound_libs:
        lib = build.load(BOUND_SOURCE, target)
        lib.ssamba_bound_lanes.restype = ctypes.c_int
        lib.ssamba_scan_bound.restype = ctypes.c_int
        lib.ssamba_scan_bound.argtypes = [ctypes.c_int64, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
        lib.ssamba_scan_inner_loop.restype = ctypes.c_int
        lib.ssamba_scan_inner_loop.argtypes = [ctypes.c_int64, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
        _bound_libs[target] = lib
    return _bound_libs[target]


def bound_lanes(target: str | None = None) -> int:
    """The vector width of ``target``'s build (the kernel's: both share scan_simd.h)."""
    return _bound_library(target).ssamba_bound_lanes()


def bound_benchmark(vector_updates: int, channels: int = 4, threads: int | None = None, target: str | None = None) -> float:
    """Seconds the kernel's per-state arithmetic takes with no memory traffic.

    Runs ``vector_updates`` state-vector updates (:func:`bound_lanes` lanes each) - the
    forward's ``exp2(dt*A)`` (the kernel's polynomial, from the kernel's own header),
    ``h = a*h + dtu*B`` and ``acc += C*h`` - on register-resident state and operands,
    ``channels`` (1, 2, 4 or 8) independent states interleaved per thread, over
    ``threads`` threads (default ``torch.get_num_threads()``) started as the scan starts
    them (csrc/scan_bound.cpp, built for ``target`` and cached like the kernel). The
    roofline of ``ssamba bench scan``.
    """
    lib = _bound_library(target)
    sink = ctypes.c_float()
    nthreads = threads or torch.get_num_threads()
    t0 = time.perf_counter()
    rc = lib.ssamba_scan_bound(int(vector_updates), int(channels), int(nthreads), ctypes.byref(sink))
    elapsed = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"bound micro-benchmark failed (code {rc})")
    return elapsed


def inner_loop_benchmark(vector_updates: int, threads: int | None = None, target: str | None = None) -> float:
    """Seconds the forward kernel's inner loop takes with only its own per-step memory
    traffic: :func:`bound_benchmark`'s arithmetic for one channel per thread, plus the
    kernel's loads of B and C (from L1) and its store of each step's ``C*h`` for the
    reduction (csrc/scan_bound.cpp). What the kernel would take if its per-chunk work
    (softplus, reductions, gate, D*u, moving u/delta/z/out) were free."""
    lib = _bound_library(target)
    sink = ctypes.c_float()
    t0 = time.perf_counter()
    rc = lib.ssamba_scan_inner_loop(int(vector_updates), int(threads or torch.get_num_threads()), ctypes.byref(sink))
    elapsed = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"inner-loop micro-benchmark failed (code {rc})")
    return elapsed


def _best_bound(vector_updates: int, threads: int, repeats: int, target: str | None = None) -> tuple[float, dict]:
    """The bound (the fastest of 1/2/4/8 interleaved channels, each a median) and every
    channel count's median."""
    bound_benchmark(vector_updates, 4, threads, target)  # warm-up (thread start, page-in)
    per = {c: statistics.median(bound_benchmark(vector_updates, c, threads, target) for _ in range(repeats))
           for c in (1, 2, 4, 8)}
    return min(per.values()), per


def bound_report(length: int, threads: int, repeats: int) -> list[str]:
    """Forward kernel time at ``length`` against the arithmetic bound; lines to print."""
    lanes = bound_lanes()
    nv = -(-D_STATE // lanes)  # state vectors per channel (N padded to whole vectors)
    vector_updates = BATCH * DIM * length * nv
    updates = BATCH * DIM * length * D_STATE
    t_bound, bound = _best_bound(vector_updates, threads, repeats)
    best_ch = min(bound, key=bound.get)
    t_inner = statistics.median(inner_loop_benchmark(vector_updates, threads) for _ in range(repeats))

    # The kernel alone: operands already in the kernel's layout, one C call per run.
    x = make_inputs(length)
    t_kernel = timeit(kernel_forward(**x, delta_softplus=True), repeats, warmup=2)
    t_backend = timeit(fwd("cpu", x), repeats, warmup=2)
    per = ", ".join(f"{c}: {t * 1e3:.2f}" for c, t in bound.items())
    return [
        f"forward at L={length}: {updates / 1e6:.2f} M state updates "
        f"(B={BATCH} x d_inner={DIM} x L x N={D_STATE}) = {vector_updates:,} {lanes}-lane vector updates "
        f"({build.cpu_target()} build)",
        "  bound: a micro-benchmark built on the kernel's SIMD header (benchmarks/csrc/scan_bound.cpp) runs the same per-update",
        "  arithmetic - exp2(dt*A) with the kernel's vector polynomial, h = a*h + dt*u*B, acc += C*h -",
        f"  on state and B/C held in registers (dt, dt*u broadcast from a {scan_cpu.chunk_size()}-entry L1 array, as in the",
        "  kernel; no other loads or stores), the same number of updates split over the same",
        f"  {threads} thread(s) started the way the kernel starts them; 1/2/4/8 independent channels",
        f"  interleaved per thread (ms: {per}); the fastest ({best_ch}) is the bound.",
        f"  bound                                      {t_bound * 1e3:8.2f} ms",
        f"  inner loop alone                           {t_inner * 1e3:8.2f} ms = {t_inner / t_bound:.2f}x the bound "
        f"({t_bound / t_inner:.0%} of bound throughput)",
        "    (the same arithmetic for one channel per thread, with the kernel's per-step loads of B and C",
        "    from L1 and its store of C*h for the reduction: the kernel with its per-chunk work free)",
        f"  kernel (C call, operands in kernel layout) {t_kernel * 1e3:8.2f} ms = {t_kernel / t_bound:.2f}x the bound "
        f"({t_bound / t_kernel:.0%} of bound throughput)",
        f"  cpu backend call (incl. fp32/layout prep)  {t_backend * 1e3:8.2f} ms = {t_backend / t_bound:.2f}x the bound "
        f"({t_bound / t_backend:.0%} of bound throughput)",
        "  (the kernel also computes softplus(delta + bias), the C.h reductions, D*u and the",
        "  SiLU(z) gate per (channel, step), and loads B and C; the bound counts the state updates only)",
    ]


@contextlib.contextmanager
def _kernel(lib):
    """The cpu backend computing with ``lib`` (another target's build) inside the block."""
    saved, scan_cpu._lib = scan_cpu._lib, lib
    try:
        yield
    finally:
        scan_cpu._lib = saved


def compare_builds(other: str, length: int, threads: int, repeats: int) -> list[str]:
    """This process's build (``$SSAMBA_CPU_TARGET``, default native) against ``other``'s,
    built beside it: the forward, forward + backward and the kernel's C call at
    ``length``, and each build's own bound, the builds alternated run by run so that
    both see the same machine; lines to print."""
    mine = build.cpu_target()
    libs = {mine: scan_cpu.load_library(), other: scan_cpu._configure(build.load(scan_cpu.SOURCE, other))}
    x = make_inputs(length)
    cases, bound_args = {}, {}
    for target, lib in libs.items():
        with _kernel(lib):
            cases[target] = {"forward": fwd("cpu", x), "forward + backward": fwd_bwd(scan_cpu.selective_scan_cpu, x),
                             "kernel C call": kernel_forward(**x, delta_softplus=True)}
        updates = BATCH * DIM * length * -(-D_STATE // bound_lanes(target))
        _, per = _best_bound(updates, threads, 3, target)
        bound_args[target] = (updates, min(per, key=per.get))
    times = {t: {name: [] for name in [*cases[t], "bound"]} for t in libs}
    for r in range(repeats + 2):  # the first two rounds warm up
        for target, lib in libs.items():
            with _kernel(lib):
                for name, fn in cases[target].items():
                    t0 = time.perf_counter()
                    fn()
                    if r >= 2:
                        times[target][name].append(time.perf_counter() - t0)
            elapsed = bound_benchmark(*bound_args[target], threads, target)
            if r >= 2:
                times[target]["bound"].append(elapsed)
    lanes = {t: bound_lanes(t) for t in libs}
    lines = [f"{'L=' + str(length):<22} {mine + f' ({lanes[mine]} lanes)':>20} {other + f' ({lanes[other]} lanes)':>20} "
             f"{other + ' / ' + mine:>16}"]
    for name in times[mine]:
        a, b = (statistics.median(times[t][name]) for t in (mine, other))
        lines.append(f"{name:<22} {a * 1e3:>17.2f} ms {b * 1e3:>17.2f} ms {b / a:>15.2f}x")
    for target in libs:
        kernel, bound = (statistics.median(times[target][n]) for n in ("kernel C call", "bound"))
        lines.append(f"  {target}: kernel at {bound / kernel:.0%} of its own bound ({lanes[target]}-lane, "
                     f"{bound_args[target][1]} interleaved channel(s))")
    return lines


def run(args) -> int:
    """The ``ssamba bench scan`` command (arguments: :mod:`ssamba.benchmarks.cli`)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    if args.target is not None and (args.target not in build.TARGETS or args.target == "native"):
        raise UserError(f"--target {args.target!r} is not a target; valid: "
                        f"{', '.join(t for t in build.TARGETS if t != 'native')}")
    why_not = args.target and build.runnable_here(args.target)
    if why_not:
        raise UserError(f"--target {args.target}: {why_not}")
    t0 = time.perf_counter()
    if scan_cpu.load_library() is None:
        print("the cpu kernel did not compile; nothing to benchmark", file=sys.stderr)
        return 1
    print(f"kernel load/compile: {time.perf_counter() - t0:.2f} s (cached after the first run)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"B={BATCH}, d_inner={DIM}, d_state={D_STATE}, fp32, delta_softplus + delta_bias + D + z; "
          f"torch threads={threads}; {os.cpu_count()} CPUs; load average {load:.2f}; median of runs\n")

    print("forward (no grad)")
    print(f"{'L':>7} {'reference ms':>14} {'cpu ms':>10} {'speedup':>9}")
    for length in args.lengths:
        x = make_inputs(length)
        ref_reps = args.ref_repeats if length <= 8192 else 1
        t_ref = timeit(fwd("reference", x), ref_reps, warmup=1 if length <= 8192 else 0)
        t_cpu = timeit(fwd("cpu", x), args.repeats, warmup=2)
        print(f"{length:>7} {t_ref * 1e3:>14.1f} {t_cpu * 1e3:>10.2f} {t_ref / t_cpu:>8.1f}x", flush=True)

    length = args.backward_length
    print(f"\nforward + backward, L={length}")
    x = make_inputs(length)
    t_cpu = timeit(fwd_bwd(scan_cpu.selective_scan_cpu, x), args.repeats, warmup=2)
    rows = [
        ("reference (sequential, autograd)",
         timeit(fwd_bwd(lambda **kw: selective_scan(**kw, backend="reference"), x), args.ref_repeats)),
        ("hillis-steele (log-depth, autograd)", timeit(fwd_bwd(hillis_steele_scan, x), args.ref_repeats)),
    ]
    best = min(t for _, t in rows)
    print(f"{'path':<36} {'ms':>10} {'cpu speedup':>12}")
    for name, t in rows:
        print(f"{name:<36} {t * 1e3:>10.1f} {t / t_cpu:>11.1f}x")
    print(f"{'cpu (fused kernel)':<36} {t_cpu * 1e3:>10.2f}")
    print(f"cpu vs best pure-PyTorch path: {best / t_cpu:.1f}x", flush=True)

    if args.target:
        print(f"\nbuilds compared, alternated in one run (median of {args.bound_repeats} runs each)")
        for line in compare_builds(args.target, args.backward_length, threads, args.bound_repeats):
            print(line)
        sys.stdout.flush()

    if not args.no_bound:
        print(f"\nkernel vs this CPU's bound (median of {args.bound_repeats} runs each)")
        for line in bound_report(args.backward_length, threads, args.bound_repeats):
            print(line)
        sys.stdout.flush()

    if args.no_memory:
        return 0
    length = max(args.lengths)
    print(f"\nmemory, L={length} (B*L*D*N fp32 = {mib(BATCH * length * DIM * D_STATE * 4).strip()})")
    parts = kernel_bytes(BATCH, DIM, length, D_STATE, threads)
    for name, n in parts.items():
        print(f"  {name:<42} {mib(n)}")
    print(f"  {'total allocated by the cpu backend':<42} {mib(sum(parts.values()))}")
    io_bytes = BATCH * DIM * length * 4
    print(f"  (for reference: one (B, D, L) fp32 tensor = {mib(io_bytes).strip()})")
    bnl = BATCH * D_STATE * length * 4
    unavoidable = {"fwd": io_bytes, "fwd+bwd": 4 * io_bytes + 2 * bnl}  # out; + du, ddelta, dz, dB, dC
    print("  measured peak-RSS increase in a fresh process, next to the outputs (and gradients) it must hold:")
    for backend, mode in [("cpu", "fwd"), ("cpu", "fwd+bwd"), ("reference", "fwd")]:
        m = measured_peak(length, backend, mode, threads)
        print(f"    {backend:<10} {mode:<8} {mib(m['extra'])}   (outputs/gradients {mib(unavoidable[mode]).strip()})")
    return 0
