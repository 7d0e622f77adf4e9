"""One prepared GPU check: environment, CUDA tests, the scan backends, the paper's
efficiency figure, pretraining throughput and a short pretraining on the GPU.

    bash scripts/gpu_check.sh OUT_DIR [BUDGET_SECONDS]      # on a machine with a CUDA GPU
    python scripts/gpu_check.py --smoke --out /tmp/check   # every section, tiny, on CPU

Everything goes under ``--out``: ``env.txt``, ``tests.log``, ``scan.csv``,
``efficiency.log`` and ``efficiency/model_bench.csv`` (and its figure),
``throughput.log`` and ``train/train_bench.csv``, ``pretrain/metrics.csv`` and
``summary.json``; ``gpu_check.sh`` keeps the whole output in ``gpu_check.log``. The sections
share ``--budget`` seconds: each gets a share of what is left and is skipped, said in
one line, when too little is left. Nothing here asserts a timing; the tests section
asserts correctness only.

``--smoke`` runs each section on CPU at toy sizes, with the backends a CPU has, to check
that the script itself works (``tests/test_gpu_check.py``); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Budget:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def share(self, fraction: float, floor: float) -> float | None:
        """``fraction`` of what is left, or None when that is under ``floor`` seconds."""
        seconds = self.left() * fraction
        return seconds if seconds >= floor else None


def say(*parts) -> None:
    print(*parts, flush=True)


def run_logged(cmd: list[str], log: Path, timeout: float) -> int:
    """Run ``cmd`` with its output appended to ``log`` and echoed; the return code, or 124."""
    say("+", " ".join(cmd))
    with open(log, "a", encoding="utf-8") as handle:
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=timeout, cwd=ROOT)
            output, code = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as expired:
            output, code = (expired.stdout or b"").decode(errors="replace") if isinstance(expired.stdout, bytes) \
                else (expired.stdout or ""), 124
        handle.write(output)
    say(output[-4000:])
    return code


# -- sections --------------------------------------------------------------------------

def environment(out: Path, device: str) -> dict:
    import torch

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "device": device,
            "cuda": torch.version.cuda, "cpu_count": os.cpu_count()}
    for name in ("triton", "mamba_ssm"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "installed")
        except Exception as error:  # absent, or a broken install
            info[name] = f"absent ({type(error).__name__})"
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count)
    smi = shutil.which("nvidia-smi")
    text = json.dumps(info, indent=1)
    if smi:
        text += "\n\n" + subprocess.run([smi], capture_output=True, text=True).stdout
    (out / "env.txt").write_text(text)
    say(text)
    return info


def tests(out: Path, timeout: float, smoke: bool) -> dict:
    """The CUDA tests: the Triton scan against the reference (fp32 and bf16, forward and
    backward), mamba-ssm's where installed, and mixed-precision training."""
    selection = ["tests/ops/test_scan_cuda.py"]
    if not smoke:  # (the smoke run checks the section itself; CI runs the Triton tests anyway)
        selection += ["tests/ops/test_scan_triton.py",
                      "tests/training/test_train.py::test_mixed_precision_trains_autocast_and_checkpoints_its_scaler"]
    code = run_logged([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection],
                      out / "tests.log", timeout)
    return {"returncode": code}


def _cuda_time(fn, sync, repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls after one warm-up."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def scan(out: Path, device: str, smoke: bool, seconds: float) -> list[dict]:
    """Each scan backend that runs on ``device`` against the reference, forward and
    forward + backward, at the tiny model's shapes (1,024 frames: 512 tokens, 384 inner
    channels, 16 states), fp32 and bf16."""
    import torch

    from ssamba.ops import available_backends, selective_scan

    batch, channels, length, d_state = (2, 16, 64, 4) if smoke else (8, 384, 512, 16)
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    probe = torch.zeros(1, 1, 1, device=dev)
    backends = [b for b in available_backends(probe) if b != "export"]
    rows = []
    started = time.monotonic()
    for dtype in (torch.float32, torch.bfloat16):
        g = torch.Generator().manual_seed(0)
        x = dict(u=torch.randn(batch, channels, length, generator=g),
                 delta=0.5 * torch.randn(batch, channels, length, generator=g) - 1.0,
                 A=-torch.exp(0.5 * torch.randn(channels, d_state, generator=g)),
                 B=torch.randn(batch, d_state, length, generator=g), C=torch.randn(batch, d_state, length, generator=g),
                 D=torch.randn(channels, generator=g), z=torch.randn(batch, channels, length, generator=g),
                 delta_bias=0.3 * torch.randn(channels, generator=g))
        x = {k: v.to(dev, dtype if k in ("u", "delta", "B", "C", "z") else torch.float32) for k, v in x.items()}
        for backend in backends:
            if time.monotonic() - started > seconds:
                say(f"scan: time share used up, {backend} {dtype} skipped")
                continue
            leaves = {k: v.clone().requires_grad_() for k, v in x.items()}

            def forward():
                with torch.no_grad():
                    selective_scan(**x, delta_softplus=True, backend=backend)

            def both():
                out_ = selective_scan(**leaves, delta_softplus=True, backend=backend)
                out_.float().sum().backward()

            repeats = 2 if backend == "reference" else 10
            try:
                row = {"backend": backend, "dtype": str(dtype).removeprefix("torch."), "batch": batch,
                       "channels": channels, "length": length, "d_state": d_state,
                       "forward_ms": round(1000 * _cuda_time(forward, sync, repeats), 3),
                       "forward_backward_ms": round(1000 * _cuda_time(both, sync, repeats), 3)}
            except Exception as error:  # a backend that cannot take this dtype here
                row = {"backend": backend, "dtype": str(dtype), "error": f"{type(error).__name__}: {error}"[:200]}
            rows.append(row)
            say("scan:", row)
    for row in rows:  # speed-up over the reference at the same dtype
        ref = next((r for r in rows if r["backend"] == "reference" and r.get("dtype") == row.get("dtype")
                    and "forward_ms" in r), None)
        if ref and "forward_ms" in row:
            row["forward_speedup"] = round(ref["forward_ms"] / row["forward_ms"], 1)
            row["forward_backward_speedup"] = round(ref["forward_backward_ms"] / row["forward_backward_ms"], 1)
    keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    with open(out / "scan.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def efficiency(out: Path, device: str, smoke: bool, seconds: float) -> int:
    """The paper's figure: batch inference time and peak memory against tokens, SSAMBA-tiny
    against SSAST-tiny (SDPA, and the explicit attention of the official code), from 1k
    tokens to 22k and on to SSAST's first out-of-memory; SSAMBA continues to 150k."""
    if smoke:
        models, tokens = ["ssamba_test", "ssast_test_patch:sdpa", "ssast_test_patch:explicit"], ["64", "128"]
    else:
        models = ["ssamba_tiny", "ssast_tiny_patch:sdpa", "ssast_tiny_patch:explicit"]
        tokens = ["1000", "4000", "11000", "22000", "44000", "88000", "150000"]
    per_run = max(30.0, seconds / 6)
    return run_logged([sys.executable, "-m", "ssamba.cli", "bench", "model", "--device", device, "--models", *models,
                       "--tokens", *tokens, "--warmup", "1", "--repeats", "3", "--timeout", f"{per_run:.0f}",
                       "--out", str(out / "efficiency")], out / "efficiency.log", seconds)


def throughput(out: Path, device: str, smoke: bool, seconds: float) -> int:
    """Pretraining steps of both families at 1,024 frames in bf16 (steps/s = 1 / step s)."""
    models = ["ssamba_test", "ssast_test_patch"] if smoke else ["ssamba_tiny", "ssast_tiny_patch"]
    frames, batch = ("128", "2") if smoke else ("1024", "32")
    return run_logged([sys.executable, "-m", "ssamba.cli", "bench", "train", "--device", device, "--models", *models,
                       "--frames", frames, "--batch-size", batch, "--precision", "bf16", "--repeats", "5",
                       "--timeout", f"{max(30.0, seconds / 2):.0f}", "--out", str(out / "train")],
                      out / "throughput.log", seconds)


def pretraining(out: Path, device: str, smoke: bool, seconds: float, suite_dir: str | None) -> dict:
    """The demo's SSAMBA pretrained on the quick suite on ``device`` in bf16, for the
    seconds given (a smoke check of the GPU path, not a result): the loss must fall."""
    from dataclasses import replace

    from ssamba.corpora import build_suite
    from ssamba.corpora.build import load_suite
    from ssamba.data import compute_stats
    from ssamba.demo import MODES, _pretrain

    try:
        suite = load_suite(suite_dir) if suite_dir else build_suite(None, seed=0, scale="quick", progress=False)
    except Exception as error:  # no suite given and none can be built here (the demo's extras missing)
        say(f"pretraining skipped: no quick suite ({type(error).__name__}: {error}); pass --suite DIR")
        return {"skipped": str(error)}
    stats = compute_stats(suite.manifest("unlabeled", "train"), max_clips=200)
    settings = replace(MODES["quick"], pretrain_steps=8 if smoke else 100_000, batch_size=4 if smoke else 32,
                       periods=1)
    run = out / "pretrain"
    overrides = {"run.device": device, "run.precision": "fp32" if smoke else "bf16", "run.max_seconds": seconds,
                 "run.log_every": 1 if smoke else 10, "data.num_workers": 0 if smoke else 4, "run.plot": False}
    summary = _pretrain("ssamba", settings, suite, stats, run, seed=0, progress=False, overrides=overrides)
    with open(run / "metrics.csv") as handle:
        losses = [float(r["train_loss"]) for r in csv.DictReader(handle) if r.get("train_loss")]
    result = {"steps": summary["steps"], "seconds": round(summary["seconds"], 1),
              "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}
    say("pretraining:", result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for the log, the CSVs and summary.json")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all sections together")
    parser.add_argument("--suite", default=None, help="a built quick suite (ssamba corpus build --scale quick)")
    parser.add_argument("--smoke", action="store_true", help="every section on CPU at toy sizes")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = Budget(args.budget)
    import torch

    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: error: no CUDA GPU is visible to PyTorch (--smoke runs the sections on CPU)",
              file=sys.stderr)
        return 2
    summary: dict = {"budget_s": args.budget, "smoke": args.smoke, "env": environment(out, device)}
    sections = [  # (name, share of what is left, least seconds worth starting, call)
        ("tests", 0.15, 20, lambda s: tests(out, s, args.smoke)),
        ("scan", 0.1, 10, lambda s: scan(out, device, args.smoke, s)),
        ("efficiency", 0.45, 30, lambda s: efficiency(out, device, args.smoke, s)),
        ("throughput", 0.3, 20, lambda s: throughput(out, device, args.smoke, s)),
        ("pretraining", 0.9, 20, lambda s: pretraining(out, device, args.smoke, s, args.suite)),
    ]
    for name, fraction, floor, call in sections:
        seconds = budget.share(fraction, floor)
        if seconds is None:
            say(f"== {name}: skipped, {budget.left():.0f} s of the budget left")
            summary[name] = "skipped: budget"
            continue
        say(f"== {name} ({seconds:.0f} s of {budget.left():.0f} s left)")
        started = time.monotonic()
        try:
            summary[name] = call(seconds)
        except Exception as error:  # one section failing must not lose the others' numbers
            say(f"{name} failed: {type(error).__name__}: {error}")
            summary[name] = f"failed: {type(error).__name__}: {error}"
        summary[f"{name}_wall_s"] = round(time.monotonic() - started, 1)
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    say(f"gpu_check: done; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
