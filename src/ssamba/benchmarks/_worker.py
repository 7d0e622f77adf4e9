"""One benchmark configuration, run in a fresh process: ``python -m ssamba.benchmarks._worker JOB``.

``JOB`` is a JSON object (see :func:`run_job`). The result is printed as one line,
``RESULT_PREFIX`` followed by JSON, after any other output. The parent
(:func:`ssamba.benchmarks.model.run_configuration`) starts one process per
configuration so that every peak-memory figure starts from a clean process and an
out-of-memory kill only loses that configuration.

Memory, on CPU: after the model and input exist and garbage is collected, the
process's resident set is the *baseline*; on Linux the kernel's high-water mark is then
reset (``/proc/self/clear_refs``) so that ``VmHWM`` - the OS's max RSS, what
``getrusage`` reports as ``ru_maxrss`` - afterwards is the peak of the runs alone.
Where the reset is impossible the baseline is ``ru_maxrss`` before the runs. The
reported ``peak_extra`` is peak minus baseline: what the forward (or training step)
itself needs on top of the model, the input and the runtime. On CUDA the allocator's
peak (``torch.cuda.max_memory_allocated``) minus the bytes allocated at the baseline.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import time

RESULT_PREFIX = "SSAMBA_BENCH_RESULT "


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _ru_maxrss_bytes() -> int:
    import resource

    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024  # bytes on macOS, KiB elsewhere


def peak_rss_bytes() -> int:
    """This process's own peak resident memory: ``VmHWM`` where Linux has it, else
    ``ru_maxrss`` (which also counts the resident set of the process that forked this one,
    carried across ``exec``: a child of a grown pytest would report pytest's size)."""
    kb = _status_kb("VmHWM:")
    return kb * 1024 if kb is not None else _ru_maxrss_bytes()


#: ``python -c`` program: run the ``ssamba`` command line on its arguments, then print
#: ``peak_rss_mb <MiB>`` (:func:`peak_rss_bytes` of that process); exits with the CLI's status.
CLI_PEAK_RSS_PROGRAM = (
    "import sys\n"
    "from ssamba.benchmarks._worker import peak_rss_bytes\n"
    "from ssamba.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "print('peak_rss_mb', peak_rss_bytes() / 2**20)\n"
    "sys.exit(rc)\n"
)


class CpuMemory:
    """Baseline and peak resident memory of this process (see the module docstring)."""

    def start(self) -> None:
        gc.collect()
        self.reset = False
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")  # reset the peak-RSS counter (VmHWM) to the current RSS
            self.reset = _status_kb("VmHWM:") is not None
        except OSError:
            pass
        if self.reset:
            self.baseline = _status_kb("VmRSS:") * 1024
            self.method = "VmHWM (OS max RSS, reset at baseline) - VmRSS at baseline"
        else:
            self.baseline = _ru_maxrss_bytes()
            self.method = "getrusage ru_maxrss after - before"

    def stop(self) -> dict:
        peak = _status_kb("VmHWM:") * 1024 if self.reset else _ru_maxrss_bytes()
        return {
            "baseline_bytes": self.baseline,
            "peak_bytes": peak,
            "peak_extra_bytes": max(0, peak - self.baseline),
            "ru_maxrss_bytes": _ru_maxrss_bytes(),
            "memory_method": self.method,
        }


class CudaMemory:
    def __init__(self, device):
        self.device = device

    def start(self) -> None:
        import torch

        gc.collect()
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.baseline = torch.cuda.memory_allocated(self.device)
        self.method = "torch.cuda.max_memory_allocated - memory_allocated at baseline"

    def stop(self) -> dict:
        import torch

        peak = torch.cuda.max_memory_allocated(self.device)
        return {
            "baseline_bytes": self.baseline,
            "peak_bytes": peak,
            "peak_extra_bytes": max(0, peak - self.baseline),
            "ru_maxrss_bytes": _ru_maxrss_bytes(),
            "memory_method": self.method,
        }


def _timed(fn, sync) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def run_job(job: dict) -> dict:
    """Build the model, run warm-up and timed calls, measure memory; returns the result dict.

    Keys of ``job``: ``mode`` ("forward" or "train"), ``preset``, ``overrides`` (config
    overrides, e.g. ``{"attention": "explicit"}``), ``frames``, ``batch``, ``threads``
    (None: torch's default), ``warmup``, ``repeats``, ``time_budget`` (seconds of timed
    runs after which no further run starts; at least one runs; a warm-up call that alone
    takes the budget becomes the single, "cold", timed run), ``device``, ``seed``,
    ``precision`` ("fp32", "bf16", "fp16": the autocast dtype), and for "train" ``mask_ratio``.
    """
    import torch

    from ssamba.models import create_model

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    device = torch.device(job.get("device") or "cpu")
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    torch.manual_seed(job.get("seed", 0))
    gen = torch.Generator().manual_seed(job.get("seed", 0))
    frames, batch = int(job["frames"]), int(job["batch"])
    model = create_model(job["preset"], input_tdim=frames, **job.get("overrides", {})).to(device)
    spec = torch.randn(batch, frames, model.config.input_fdim, generator=gen).to(device)
    grid = model.patch_grid(frames)
    info = {
        "tokens": grid[0] * grid[1],
        "seq_len": grid[0] * grid[1] + model.num_prefix_tokens,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "torch": torch.__version__,
    }
    step = _step(job, model, spec, device, info)
    memory = CudaMemory(device) if cuda else CpuMemory()
    memory.start()
    timed = _measure(step, sync, job)
    return dict(info, **memory.stop(), **timed)


def _step(job: dict, model, spec, device, info: dict):
    """The call to time: an eval forward without autograd, or a pretraining step (under
    autocast for a reduced ``precision``); what it adds to the result goes in ``info``."""
    import torch

    if job["mode"] == "forward":
        model.eval()

        def step():
            with torch.no_grad():
                model.forward_features(spec)

    elif job["mode"] == "train":
        from ssamba.allocator import apply_allocator_policy
        from ssamba.benchmarks.steps import pretraining_step

        if device.type != "cuda":
            info["malloc_policy"] = apply_allocator_policy()  # as the CPU training commands do
        step, info["num_masked"] = pretraining_step(model, spec, job.get("mask_ratio", 400 / 512),
                                                    job.get("seed", 0))
    else:
        raise ValueError(f"unknown mode {job['mode']!r}")
    precision = job.get("precision", "fp32")
    if precision != "fp32":  # the whole call under autocast, as run.precision trains (no loss scaling here)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        plain_step = step

        def step():
            with torch.autocast(device.type, dtype=dtype):
                plain_step()

    return step


def _measure(step, sync, job: dict) -> dict:
    """Warm-up and timed calls of ``step`` within the job's repeats and time budget: the
    result's timing fields."""
    budget = float(job.get("time_budget", float("inf")))
    warm: list[float] = []
    times: list[float] = []
    cpu0 = time.process_time()
    for _ in range(int(job.get("warmup", 1))):
        warm.append(_timed(step, sync))
    single = bool(warm) and warm[0] >= budget
    if single:
        # One call alone took the whole time budget: its one-time costs (thread pools,
        # kernel set-up: well under a second) are noise next to it, so the warm-up call
        # is the measurement and is not repeated ("cold" in the result).
        times = warm[:1]
        warm = []
    else:
        cpu0 = time.process_time()
        for _ in range(max(1, int(job.get("repeats", 3)))):
            times.append(_timed(step, sync))
            if sum(times) >= budget:
                break
    cpu = time.process_time() - cpu0
    return dict(
        time_s=statistics.median(times),
        time_min_s=min(times),
        time_max_s=max(times),
        runs=len(times),
        cold=single,
        warmup_runs=len(warm),
        warmup_s=sum(warm),
        # CPU seconds of this process per wall second of the timed runs: close to the
        # thread count when the cores were ours, lower when other processes competed.
        cpu_util=round(cpu / sum(times), 2) if sum(times) > 0 else None,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job = json.loads(argv[0])
    from ssamba.threads import apply_thread_policy

    policy = apply_thread_policy()  # as the ssamba command does, before torch is imported
    result = dict(run_job(job), thread_policy=policy)
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
