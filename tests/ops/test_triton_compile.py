"""The Triton scan kernels compile for A100 (sm_80) and H100 (sm_90), fp32 and bf16.

Triton's interpreter, which the other Triton tests use on a CPU machine, accepts
programs the compiler would reject; this compiles the real thing, on no GPU, through
``lab/triton_compile.py`` (in a fresh process: the interpreter, when chosen, replaces
the compiler for the whole process), and prints each kernel's registers, stack, spill
(local) and shared memory, which docs/gpu.md records.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[2] / "lab" / "triton_compile.py"


def test_forward_and_backward_compile_for_sm80_and_sm90_in_fp32_and_bf16():
    try:
        import triton  # noqa: F401
    except ImportError as err:
        if os.environ.get("SSAMBA_REQUIRE_TOOLCHAINS") == "1":
            pytest.fail(f"triton does not import ({err}); SSAMBA_REQUIRE_TOOLCHAINS=1 forbids skipping")
        pytest.skip(f"triton does not import: {err}")
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    proc = subprocess.run([sys.executable, str(LAB), "--arch", "80", "90", "--dtype", "fp32", "bf16"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout)
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    assert {(r[0], r[1], r[2]) for r in rows} == {
        (k, f"sm_{a}", d) for k in ("scan_fwd_kernel", "scan_bwd_kernel") for a in (80, 90) for d in ("fp32", "bf16")}
    for kernel, arch, dtype, registers, stack, local, shared, warps in rows:
        assert 0 < int(registers) <= 255, (kernel, arch, dtype)  # a thread's register limit on both
        assert int(local) >= 0 and int(shared) >= 0 and int(warps) > 0
