"""The Triton scan kernels compiled for NVIDIA GPUs on a machine without one.

Triton compiles a kernel to cubin for any CUDA architecture without a GPU
(``triton.compile`` with a ``GPUTarget``), so compile errors, register use, spills and
shared memory can be seen on a CPU-only machine and in CI. For each architecture and
input dtype this compiles the forward and backward kernels of :mod:`ssamba.ops.scan_triton`
at the tiny model's shapes (d_inner 384, d_state 16: 32-channel blocks of 16 states,
32-step chunks) and reads each cubin's resource use with the ``cuobjdump`` that Triton
ships. Registers are per thread; local memory is where spilled registers go.

    python lab/triton_compile.py [--arch 80 90] [--dtype fp32 bf16]

Run it without ``TRITON_INTERPRET=1`` (the interpreter replaces the compiler).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile

SCALARS = ("L", "DIM", "N", "NCHUNKS", "BATCH")
# Pointers that hold fp32 whatever the inputs' dtype: the saved states, the backward's
# scratch and the shared gradients' partials.
FP32_POINTERS = {"ckpt_ptr", "scratch_ptr", "ga_ptr", "gb_ptr", "gc_ptr", "gd_ptr", "gbias_ptr"}
# The tiny model's shapes, as scan_triton._blocks chooses them for d_inner 384, d_state 16.
SHAPE = dict(BLOCK_D=32, BLOCK_N=16, CHUNK=32)
FLAGS = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, REVERSE=False)


def _signature(fn, dtype: str) -> tuple[dict, dict]:
    constexprs = {**SHAPE, **FLAGS, "SAVE": True}
    signature = {}
    for name in fn.arg_names:
        if name in SCALARS:
            signature[name] = "i32"
        elif name.endswith("_ptr"):
            signature[name] = "*fp32" if name in FP32_POINTERS else f"*{dtype}"
        else:
            signature[name] = "constexpr"
    return signature, {k: v for k, v in constexprs.items() if k in signature}


def resource_usage(cubin: bytes) -> dict[str, int]:
    """Registers, stack, local (spill) and shared bytes of the one function in ``cubin``."""
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True,
                              check=True).stdout
    found = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", text.split("Function", 1)[-1]))
    return {k.lower(): int(v) for k, v in found.items()}


def compile_kernels(arch: int, dtype: str) -> list[dict]:
    """Compile the forward and backward scan kernels for ``sm_<arch>`` with ``dtype`` inputs;
    one dict per kernel: name, arch, dtype, registers, stack, local, shared, cubin bytes."""
    import triton
    from triton.backends.compiler import GPUTarget

    from ssamba.ops import _triton_kernels as kernels

    rows = []
    for fn in (kernels.scan_fwd_kernel, kernels.scan_bwd_kernel):
        signature, constexprs = _signature(fn, dtype)
        compiled = triton.compile(triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                                  target=GPUTarget("cuda", arch, 32))
        usage = resource_usage(compiled.asm["cubin"])
        rows.append({"kernel": fn.__name__, "arch": f"sm_{arch}", "dtype": dtype, "registers": usage.get("reg"),
                     "stack": usage.get("stack"), "local": usage.get("local"), "shared": usage.get("shared"),
                     "warps": compiled.metadata.num_warps, "cubin_bytes": len(compiled.asm["cubin"])})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, nargs="+", default=[80, 90], help="CUDA compute capabilities (80: A100, 90: H100)")
    p.add_argument("--dtype", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        p.error("unset TRITON_INTERPRET: the interpreter compiles nothing")
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, said aloud to silence its warning
    print(f"{'kernel':<16} {'arch':<6} {'dtype':<5} {'registers':>9} {'stack B':>8} {'local B':>8} {'shared B':>9} {'warps':>5}")
    for arch in args.arch:
        for dtype in args.dtype:
            for r in compile_kernels(arch, dtype):
                print(f"{r['kernel']:<16} {r['arch']:<6} {r['dtype']:<5} {r['registers']:>9} {r['stack']:>8} "
                      f"{r['local']:>8} {r['shared']:>9} {r['warps']:>5}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
