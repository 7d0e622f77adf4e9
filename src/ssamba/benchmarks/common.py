"""What the benchmarks share: model specs, one fresh process per configuration, the
background load, timing and formatting. Imports no torch at module level (the parsers in
:mod:`ssamba.benchmarks.cli` import this module)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from ..threads import OPENMP_WAIT_VARS
from ._worker import RESULT_PREFIX

MIB = 2**20
DEFAULT_TOKENS = (512, 1024, 2048, 4096, 8192, 16384, 22000)
QUICK_TOKENS = (512, 2048, 8192)


@dataclass
class ModelSpec:
    """A preset and its variant: SSAST attention kind or SSAMBA scan backend."""

    label: str
    preset: str
    variant: str
    family: str
    config: object
    overrides: dict = field(default_factory=dict)
    num_params: int = 0


def parse_spec(text: str) -> ModelSpec:
    """``"ssast_tiny_patch:explicit"`` -> a :class:`ModelSpec` (raises ``ValueError``)."""
    import torch

    from ssamba.models import MambaOutConfig, SSAMBAConfig, SSASTConfig, get_config, model_from_config
    from ssamba.ops import available_backends

    preset, _, variant = text.partition(":")
    base = get_config(preset)
    if isinstance(base, SSASTConfig):
        family, variant = "ssast", variant or "sdpa"
        overrides = {"attention": variant}
    elif isinstance(base, SSAMBAConfig):
        family, variant = "ssamba", variant or "auto"
        if variant != "auto" and variant not in available_backends():
            raise ValueError(f"{text}: the SSAMBA variant is a scan backend, 'auto' or one of "
                             f"{available_backends()}")
        overrides = {"scan_backend": variant}
    elif isinstance(base, MambaOutConfig):
        if variant:
            raise ValueError(f"{text}: MambaOut has no variants (no scan, no attention)")
        family, overrides = "mambaout", {}
    else:
        if variant:
            raise ValueError(f"{text}: no variants for {type(base).__name__}")
        family, overrides = type(base).__name__, {}
    config = get_config(preset, **overrides)
    try:
        with torch.device("meta"):  # shapes only: checks the options, counts parameters
            num_params = sum(p.numel() for p in model_from_config(config).parameters())
    except ValueError as err:
        raise ValueError(f"{text}: {err}") from err
    return ModelSpec(text, preset, variant, family, config, overrides, num_params)


def run_configuration(job: dict, timeout: float) -> dict:
    """Run one job in a fresh process; returns ``{"status", "reason", ...result}``.

    ``status``: ``ok``; ``oom`` (killed by SIGKILL - the kernel's OOM killer, most
    likely - or an allocation failure); ``killed`` (another signal); ``timeout``;
    ``error`` (any other failure; ``reason`` holds the last line of its stderr).
    """
    cmd = [sys.executable, "-m", "ssamba.benchmarks._worker", json.dumps(job)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # this configuration's own process only
        proc.communicate()
        return {"status": "timeout", "reason": f"no result after {timeout:g} s; process killed",
                "wall_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT_PREFIX) and proc.returncode == 0:
            return dict(json.loads(line[len(RESULT_PREFIX):]), status="ok", reason="", wall_s=wall)
    rc = proc.returncode
    tail = [ln for ln in err.strip().splitlines() if ln.strip()]
    last = tail[-1].strip() if tail else ""
    low = err.lower()
    if rc == -signal.SIGKILL:
        return {"status": "oom", "reason": "killed by SIGKILL (most likely the OOM killer)", "wall_s": wall}
    if "memoryerror" in low or "can't allocate memory" in low or "out of memory" in low:
        return {"status": "oom", "reason": last[:300] or "allocation failed", "wall_s": wall}
    if rc is not None and rc < 0:
        return {"status": "killed", "reason": f"killed by signal {-rc}", "wall_s": wall}
    return {"status": "error", "reason": (last or f"exit code {rc}, no result")[:300], "wall_s": wall}


def load1() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def mib(n) -> float | None:
    return None if n is None else round(n / MIB, 2)


def fmt(x, spec: str, empty: str = "-") -> str:
    """``x`` formatted with ``spec``, or ``empty`` for None."""
    return empty if x is None else format(x, spec)


#: The competing process of ``--under-load``: PyTorch matrix products on its default threads.
LOAD_CODE = "import torch\na = torch.randn(384, 384)\nwhile True:\n    a = torch.tanh(a @ a * 0.01)\n"


@contextlib.contextmanager
def background_load(settle_s: float = 2.0):
    """A second process keeping the cores busy while the block runs (killed after it)."""
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_WAIT_VARS}
    proc = subprocess.Popen([sys.executable, "-c", LOAD_CODE], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)  # OpenMP's defaults, as another user's job would have
    try:
        time.sleep(settle_s)  # past its torch import: busy when the timing starts
        yield proc
    finally:
        proc.kill()
        proc.wait()


