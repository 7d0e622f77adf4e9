"""``ssamba bench model``: inference time and peak memory of SSAMBA vs SSAST over length.

For each token count and each model spec (``PRESET[:VARIANT]``) one fresh process
(:mod:`ssamba.benchmarks._worker`) builds the model for exactly that input length,
times its forward pass (warm-up, then the median of timed runs) and measures the peak
memory the forward adds (see the worker's docstring). Configurations whose estimated
memory exceeds the cap are skipped and marked; a process that runs out of memory, dies,
fails or times out is marked, and the model's larger token counts are skipped. Writes
a CSV, a log-log plot and a JSON summary (slopes, ratios, crossovers) and prints tables.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

from ..device import resolve_device
from .common import DEFAULT_TOKENS, QUICK_TOKENS, ModelSpec, fmt, load1, mib, parse_spec, run_configuration

COLUMNS = [
    "model", "preset", "variant", "family", "tokens_requested", "tokens", "seq_len", "frames",
    "batch", "device", "threads", "status", "reason", "time_s", "time_min_s", "time_max_s",
    "runs", "warmup_runs", "cold", "cpu_util", "peak_extra_mb", "peak_mb", "baseline_mb", "est_mb", "load1",
    "wall_s", "memory_method",
]


def patch_grid(config, frames: int) -> tuple[int, int]:
    (kf, kt), (sf, st) = config.patch_size, config.patch_stride
    return (config.input_fdim - kf) // sf + 1, (frames - kt) // st + 1


def frames_for_tokens(config, tokens: int) -> int:
    """Fewest frames whose patch grid has at least ``tokens`` patches (whole columns)."""
    rows = patch_grid(config, config.patch_size[1])[0]
    cols = max(1, -(-tokens // rows))
    return (cols - 1) * config.patch_stride[1] + config.patch_size[1]


def estimate_bytes(spec: ModelSpec, frames: int, batch: int, mode: str = "forward") -> int:
    """Rough peak memory of weights, input and one forward (not the Python/torch runtime).

    Activations are counted as a multiple of one ``(batch, seq_len, embed_dim)`` fp32
    tensor (generous multiples measured on this code, rounded up); the explicit
    attention adds its ``L x L`` score matrices: the matrix and its softmax live at once,
    ``2 x batch x heads x L^2 x 4`` bytes. Only used to skip configurations over the cap.
    """
    c = spec.config
    rows, cols = patch_grid(c, frames)
    dim = c.embed_dim
    if spec.family in ("ssamba", "mambaout"):
        prefix = 1 if getattr(c, "use_cls_token", True) else 0
        seq = rows * cols + prefix
        act = 48 * batch * seq * dim * 4  # in_proj out, x/z, conv, flips, scan copies, residuals
    else:
        prefix = getattr(c, "num_prefix_tokens", 2)
        seq = rows * cols + prefix
        act = 28 * batch * seq * dim * 4  # qkv and its head-major copies, MLP hidden, residual
        if getattr(c, "attention", "sdpa") == "explicit":
            act += 2 * batch * c.num_heads * seq * seq * 4
    if mode == "train":
        act *= 4  # two passes kept for backward, plus gradients
    return int(4 * spec.num_params * (4 if mode == "train" else 1) + batch * frames * c.input_fdim * 4 + act)


def fit_slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(y) against log(x); None with fewer than two points."""
    pts = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y and y > 0]
    if len(pts) < 2 or len({p[0] for p in pts}) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def crossover(mine: dict[int, float], other: dict[int, float]) -> dict:
    """Where ``mine`` becomes (and stays) faster than ``other``, over common token counts.

    ``measured``: the smallest count from which ``mine`` is faster at every larger
    common count; ``estimate``: log-log interpolation of the time ratio between that
    count and the previous (slower) one.
    """
    common = sorted(set(mine) & set(other))
    if not common:
        return {"measured": None, "estimate": None, "text": "no common measured lengths"}
    faster = [mine[t] < other[t] for t in common]
    if not faster[-1]:
        return {"measured": None, "estimate": None,
                "text": f"not faster at the largest common length ({common[-1]} tokens)"}
    i = len(common) - 1
    while i > 0 and faster[i - 1]:
        i -= 1
    if i == 0:
        return {"measured": common[0], "estimate": None,
                "text": f"faster at every measured length (from {common[0]} tokens)"}
    lo, hi = common[i - 1], common[i]
    r_lo = math.log(mine[lo] / other[lo])
    r_hi = math.log(mine[hi] / other[hi])
    frac = r_lo / (r_lo - r_hi) if r_lo != r_hi else 0.5
    est = math.exp(math.log(lo) + frac * (math.log(hi) - math.log(lo)))
    return {"measured": hi, "estimate": round(est), "slower_at": lo,
            "text": f"faster from {hi} tokens on (slower at {lo}); log-log interpolation ~{round(est)} tokens"}


def summarize(rows: list[dict], labels: list[str], slope_range: tuple[int, int]) -> dict:
    """Slopes per model, ratios of the first model to the others, crossovers."""
    ok = {lab: {r["tokens"]: r for r in rows if r["model"] == lab and r["status"] == "ok"} for lab in labels}
    lo, hi = slope_range
    slopes = {}
    for lab in labels:
        pts = ok[lab]
        entry = {}
        for key, col in (("time", "time_s"), ("memory", "peak_extra_mb")):
            allp = [(t, r[col]) for t, r in sorted(pts.items())]
            rng = [(t, y) for t, y in allp if lo <= t <= hi]
            entry[key] = {"all": fit_slope(allp), "range": fit_slope(rng),
                          "range_points": [t for t, _ in rng]}
        slopes[lab] = entry
    ratios, crossovers = {}, {}
    if labels:
        first = labels[0]
        for other in labels[1:]:
            per = []
            for t in sorted(set(ok[first]) & set(ok[other])):
                a, b = ok[first][t], ok[other][t]
                mem = (a["peak_extra_mb"] / b["peak_extra_mb"]) if b["peak_extra_mb"] else None
                per.append({"tokens": t, "time": a["time_s"] / b["time_s"], "memory": mem})
            ratios[other] = per
            crossovers[other] = crossover({t: r["time_s"] for t, r in ok[first].items()},
                                          {t: r["time_s"] for t, r in ok[other].items()})
    return {"reference_model": labels[0] if labels else None, "slope_range": [lo, hi],
            "slopes": slopes, "ratios": ratios, "crossovers": crossovers}


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS})


def plot(path: Path, rows: list[dict], labels: list[str], title: str, slopes: dict | None = None) -> None:
    from ..errors import require

    matplotlib = require("matplotlib", "the benchmark's plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for lab in labels:
        mine = [r for r in rows if r["model"] == lab]
        ok = sorted((r for r in mine if r["status"] == "ok"), key=lambda r: r["tokens"])
        missing = [f"{r['tokens_requested']}: {r['status']}" for r in mine if r["status"] != "ok"]
        name = lab + (f" ({', '.join(missing)})" if missing else "")
        xs = [r["tokens"] for r in ok]
        for ax, key, col in ((axes[0], "time", "time_s"), (axes[1], "memory", "peak_extra_mb")):
            k = (slopes or {}).get(lab, {}).get(key, {}).get("all")
            ax.loglog(xs, [max(r[col], 1e-6) for r in ok], "o-",
                      label=name + ("" if k is None else f", slope {k:.2f}"))
    axes[0].set_ylabel("forward time (s), median")
    axes[1].set_ylabel("forward peak memory above baseline (MiB)")
    def minor_label(v, _):  # label the 2x and 5x minor ticks only
        lead = v / 10 ** math.floor(math.log10(v)) if v > 0 else 0
        return f"{v:g}" if any(abs(lead - d) < 1e-6 for d in (2, 5)) else ""

    tokens = sorted({r["tokens"] for r in rows if r["status"] == "ok"})
    for ax in axes:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(minor_label))
        if tokens:  # the measured token counts are the x ticks
            ax.set_xticks(tokens)
            ax.set_xticklabels([str(t) for t in tokens], rotation=45, fontsize=8)
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.tick_params(which="minor", labelsize=7)
        ax.set_xlabel("patch tokens")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_report(rows: list[dict], labels: list[str], summary: dict, header: str) -> None:
    print(header)
    print(f"\n{'model':<28} {'tokens':>7} {'frames':>7} {'time s':>9} {'runs':>4} {'cpu':>5} "
          f"{'fwd peak MiB':>13} {'est MiB':>9} {'load':>5}  status")
    for r in rows:
        note = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}"
        print(f"{r['model']:<28} {r['tokens'] or r['tokens_requested']:>7} {r['frames']:>7} "
              f"{fmt(r.get('time_s'), '9.3f'):>9} "
              f"{fmt(r.get('runs'), 'd') + ('*' if r.get('cold') else ''):>4} "
              f"{fmt(r.get('cpu_util'), '5.2f'):>5} {fmt(r.get('peak_extra_mb'), '13.1f'):>13} {fmt(r.get('est_mb'), '9.0f'):>9} "
              f"{fmt(r.get('load1'), '5.2f'):>5}  {note}")
    first = summary["reference_model"]
    if summary["ratios"]:
        print(f"\nratios {first} / other at each length (time, forward peak memory; < 1 means {first} "
              "is faster / needs less)")
        others = list(summary["ratios"])
        print(f"{'tokens':>7} " + " ".join(f"{'vs ' + o:>34}" for o in others))
        print(f"{'':>7} " + " ".join(f"{'time':>17}{'memory':>17}" for _ in others))
        tokens = sorted({e["tokens"] for o in others for e in summary["ratios"][o]})
        for t in tokens:
            cells = []
            for o in others:
                e = next((e for e in summary["ratios"][o] if e["tokens"] == t), None)
                cells.append(f"{fmt(e and e['time'], '17.3f'):>17}{fmt(e and e['memory'], '17.3f'):>17}")
            print(f"{t:>7} " + " ".join(cells))
    lo, hi = summary["slope_range"]
    print(f"\nlog-log slopes (y ~ tokens^k), fitted by least squares over all measured lengths "
          f"and over {lo}-{hi} tokens")
    print(f"{'model':<28} {'time all':>9} {'time rng':>9} {'mem all':>9} {'mem rng':>9}  points in range")
    for lab in labels:
        s = summary["slopes"][lab]
        print(f"{lab:<28} {fmt(s['time']['all'], '9.3f'):>9} {fmt(s['time']['range'], '9.3f'):>9} "
              f"{fmt(s['memory']['all'], '9.3f'):>9} {fmt(s['memory']['range'], '9.3f'):>9}  "
              f"{', '.join(map(str, s['time']['range_points'])) or '-'}")
    for other, c in summary["crossovers"].items():
        print(f"crossover, {first} faster than {other}: {c['text']}")


def _cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what the platform says."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return cpu


def _configuration(spec, tokens: int, args, device: str, warmup: int, repeats: int, failed: dict[str, str],
                   t_start: float) -> dict:
    """One model at one length, measured in a fresh process (or skipped: over the memory
    cap, or after the same model failed at a shorter length, noted in ``failed``)."""
    frames = frames_for_tokens(spec.config, tokens)
    grid = patch_grid(spec.config, frames)
    est = estimate_bytes(spec, frames, args.batch_size)
    row = {"model": spec.label, "preset": spec.preset, "variant": spec.variant,
           "family": spec.family, "tokens_requested": tokens, "tokens": grid[0] * grid[1],
           "frames": frames, "batch": args.batch_size, "device": device,
           "est_mb": mib(est), "load1": round(load1(), 2)}
    if spec.label in failed:
        return dict(row, status="skipped", reason=f"after {failed[spec.label]}")
    if est > args.max_memory_gb * 2**30:
        return dict(row, status="skipped",
                    reason=f"estimated {est / 2**30:.1f} GiB > --max-memory-gb {args.max_memory_gb:g}")
    print(f"[{time.perf_counter() - t_start:7.1f} s] {spec.label} at {row['tokens']} tokens "
          f"({frames} frames) ...", file=sys.stderr, flush=True)
    job = {"mode": "forward", "preset": spec.preset, "overrides": spec.overrides,
           "frames": frames, "batch": args.batch_size, "threads": args.threads,
           "warmup": warmup, "repeats": repeats, "time_budget": args.time_budget,
           "device": device, "seed": args.seed, "precision": args.precision}
    res = run_configuration(job, args.timeout)
    row.update({k: v for k, v in res.items() if k in COLUMNS})
    row["wall_s"] = round(res["wall_s"], 2)
    if res["status"] == "ok":
        row.update(peak_extra_mb=mib(res["peak_extra_bytes"]), peak_mb=mib(res["peak_bytes"]),
                   baseline_mb=mib(res["baseline_bytes"]))
        print(f"           -> {res['time_s']:.3f} s (median of {res['runs']}"
              f"{', cold' if res.get('cold') else ''}), "
              f"{row['peak_extra_mb']:.1f} MiB, cpu util {res['cpu_util']}",
              file=sys.stderr, flush=True)
    else:
        failed[spec.label] = f"{res['status']} at {row['tokens']} tokens"
        print(f"           -> {res['status']}: {res['reason']}", file=sys.stderr, flush=True)
    return row


def run(args) -> int:

    try:
        specs = [parse_spec(s) for s in args.models]
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        print("error: a model spec is repeated", file=sys.stderr)
        return 2
    tokens_list = args.tokens or list(QUICK_TOKENS if args.quick else DEFAULT_TOKENS)
    warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load_start = load1()

    rows: list[dict] = []
    failed: dict[str, str] = {}
    t_start = time.perf_counter()
    for tokens in sorted(set(tokens_list)):
        for spec in specs:
            rows.append(_configuration(spec, tokens, args, device, warmup, repeats, failed, t_start))
    elapsed = time.perf_counter() - t_start

    summary = summarize(rows, labels, tuple(args.slope_range))
    threads = next((r["threads"] for r in rows if r.get("threads")), args.threads)
    cpu = _cpu_name()
    header = (f"forward (inference, no grad), batch {args.batch_size}, fp32, device {device}, "
              f"{threads} threads, {os.cpu_count()} CPUs ({cpu}); warm-up {warmup}, median of up to "
              f"{repeats} runs (time budget {args.time_budget:g} s; runs marked * are one cold run: the "
              f"warm-up call alone took the budget); one fresh process per configuration; "
              f"memory = peak resident (CPU: OS max RSS) minus the baseline with model and input built; "
              f"cpu = process CPU s per wall s while timed (~threads when uncontended); load = 1-min "
              f"load average at the configuration's start ({load_start:.2f} at start, {load1():.2f} at end); "
              f"{elapsed:.0f} s in all")
    summary.update(header=header, device=device, batch=args.batch_size, threads=threads,
                   load_start=load_start, load_end=load1(), elapsed_s=elapsed, cpu=cpu)
    write_csv(out / "model_bench.csv", rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    from ..errors import MissingDependencyError

    written = [out / "model_bench.csv", out / "model_bench.png", out / "summary.json"]
    try:
        plot(written[1], rows, labels,
             f"forward, batch {args.batch_size}, fp32, {device}, {threads} threads ({cpu}); "
             "slopes: log-log fit over all measured points", summary["slopes"])
    except MissingDependencyError as err:  # the figures stand without the picture
        print(f"no plot: {err}", file=sys.stderr)
        written.remove(written[1])
    print_report(rows, labels, summary, header)
    print(f"\nwrote {', '.join(map(str, written))}")
    return 0
