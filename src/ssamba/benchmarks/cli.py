"""``ssamba bench {scan,model,train}``: argument parsers and command functions.

Building these parsers imports no torch: each command function imports its benchmark
module when it runs. Wire into a top-level parser with ``add_bench_parser(subparsers)``
(the object ``ArgumentParser.add_subparsers`` returns); each sub-subcommand sets
``func`` to a function ``(argparse.Namespace) -> int``.
"""

from __future__ import annotations

import argparse

from ..argtypes import at_least, positive_float


def _plain(text: str | None) -> str | None:
    """A docstring as help text: RST's ``literal`` marks dropped."""
    return text.replace("``", "") if text else text
from .common import DEFAULT_TOKENS, QUICK_TOKENS

DEFAULT_MODEL_SPECS = ("ssamba_tiny", "ssast_tiny_patch:sdpa", "ssast_tiny_patch:explicit")
DEFAULT_TRAIN_SPECS = ("ssamba_tiny", "ssast_tiny_patch")
DEFAULT_TRAIN_FRAMES = (100, 1024)

_MODEL_SPEC_HELP = (
    "PRESET[:VARIANT]; VARIANT is the attention for SSAST presets ('sdpa' = PyTorch's "
    "scaled_dot_product_attention, 'explicit' = the official code's softmax(QK^T)V that "
    "materialises the L x L matrix; default sdpa) and the scan backend for SSAMBA presets "
    "('auto', 'cpu', 'reference', 'cuda'; default auto); MambaOut presets (mambaout_tiny: "
    "SSAMBA without its SSM) have none"
)


def cmd_bench_scan(args: argparse.Namespace) -> int:
    """Fused CPU selective scan vs pure-PyTorch scans, and vs this CPU's arithmetic bound."""
    from .scan import run

    return run(args)


def cmd_bench_model(args: argparse.Namespace) -> int:
    """SSAMBA vs SSAST inference: forward time and peak memory over sequence length."""
    from .model import run

    return run(args)


def cmd_bench_train(args: argparse.Namespace) -> int:
    """One pretraining step (forward + backward + AdamW) of the tiny presets on 1 s and 10 s inputs."""
    from .train import run

    return run(args)


def cmd_bench_onnx(args: argparse.Namespace) -> int:
    """onnxruntime against PyTorch on exported presets: largest difference and both times."""
    from .onnx_export import run

    return run(args)


def cmd_bench_embed(args: argparse.Namespace) -> int:
    """Wall time of ``ssamba embed`` over many short files, quiet and beside another job."""
    from .embed import run

    return run(args)


def cmd_bench_long(args: argparse.Namespace) -> int:
    """Time and peak memory of ``ssamba embed`` on long files (whole or in windows), and a needle's reach."""
    from .long_audio import run

    return run(args)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults (those that are not None/False) and keeps the descriptions' line breaks."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


_SCAN_DESCRIPTION = """\
Benchmark the fused CPU selective scan (the 'cpu' backend) in the Mamba case: fp32,
batch 1, d_inner 384, d_state 16, with delta_softplus, delta_bias, D and z.

Prints:
  1. forward time, reference backend vs cpu backend, at each --lengths value;
  2. forward+backward time at --backward-length: the cpu backend vs the pure-PyTorch
     paths (the reference loop, whose autograd is linear in L, and a log-depth
     Hillis-Steele parallel scan implemented in the benchmark);
  3. the forward kernel's time against this CPU's bound at --backward-length: a
     micro-benchmark runs the kernel's per-state-update arithmetic (vector exp2
     polynomial and the multiply-adds) on register-resident state with no memory
     traffic, for the same number of updates on the same threads;
  4. the cpu backend's extra memory at the largest length (analytic, and the peak-RSS
     increase measured in a fresh process);
  5. with --target T: the kernel built for T beside this process's build
     (SSAMBA_CPU_TARGET, default native), both timed alternately at --backward-length,
     with their ratio and each build's own bound (its vector width).
Timings are medians after warm-up."""

_MODEL_DESCRIPTION = """\
Inference forward time and peak memory of model presets over sequence length
(the SSAMBA paper's efficiency claim), one fresh Python process per configuration.

Token counts are patch tokens of a 128-bin spectrogram: for 16x16 patches with stride
16, tokens = 8 x frames / 16, so 22000 tokens = 44000 frames (~7.3 min of audio). Each
model is built for the exact input length (its position grid covers the input; no
resampling). Per configuration the child process builds the model and a random input,
records its resident memory (the baseline), runs --warmup forwards and then up to
--repeats timed forwards (fewer if --time-budget runs out; at least one; a warm-up
that alone exceeds the budget is itself the one, "cold", run), and reports
the median time and the peak resident memory (Linux: VmHWM after resetting the
high-water mark at the baseline, i.e. the OS's max RSS; elsewhere getrusage's
ru_maxrss) minus the baseline: the memory the forward itself needs. On CUDA: the
caching allocator's peak minus the allocated bytes at the baseline.

A configuration whose estimated memory exceeds --max-memory-gb is skipped and marked;
a child that runs out of memory, is killed, fails or passes --timeout is marked, and
the model's larger token counts are then skipped - the run never crashes.

Writes to --out: model_bench.csv (one row per requested configuration),
model_bench.png (log-log time and memory vs tokens), summary.json (slopes, ratios,
crossovers), and prints the tables. Ratios and crossovers compare the first model
with each of the others."""

_TRAIN_DESCRIPTION = """\
Time one pretraining step - masked patch modeling with the official joint objective
(InfoNCE + 10 x MSE, two encoder passes with independent cluster masks), backward, and
an AdamW step - for each model at each input length, in a fresh process per
configuration. The default lengths are 1 s (100 frames, padded to 112, a multiple
of the 16-frame patch) and 10 s (1024 frames, the recipes' input). Reports the median
step time after warm-up, the peak resident memory of the step above the baseline, and
the time ratio of the first model to each other model."""


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``bench`` and its benchmarks under ``subparsers``."""
    bench = subparsers.add_parser(
        "bench",
        help="Benchmarks: selective scan, model inference over length, training step, embedding, ONNX.",
        description="Benchmarks. Nothing here asserts timings; numbers are printed and written to files.",
    )
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    bench.set_defaults(func=lambda args: (bench.print_help(), 0)[1])

    _add_scan_parser(sub)
    _add_model_parser(sub)
    _add_train_parser(sub)
    _add_embed_parser(sub)
    _add_long_parser(sub)
    _add_onnx_parser(sub)
    return bench


def _add_scan_parser(sub) -> None:
    p = sub.add_parser("scan", help=_plain(cmd_bench_scan.__doc__), description=_SCAN_DESCRIPTION,
                       formatter_class=_Formatter)
    p.add_argument("--lengths", type=at_least(1), nargs="+", default=[2048, 8192, 22000], metavar="L",
                   help="sequence lengths of the forward table")
    p.add_argument("--repeats", type=at_least(1), default=7, help="timed runs of the cpu backend (median reported)")
    p.add_argument("--ref-repeats", type=at_least(1), default=3,
                   help="timed runs of the slow pure-PyTorch paths (1 above L=8192)")
    p.add_argument("--backward-length", type=at_least(1), default=2048, metavar="L",
                   help="length of the forward+backward table and of the bound comparison")
    p.add_argument("--bound-repeats", type=at_least(1), default=15,
                   help="timed runs of the bound micro-benchmark and of the kernel it is compared with")
    p.add_argument("--threads", type=at_least(1), default=None,
                   help="torch.set_num_threads before measuring (default: torch's default)")
    p.add_argument("--no-bound", action="store_true", help="skip the bound comparison")
    p.add_argument("--no-memory", action="store_true", help="skip the memory table")
    p.add_argument("--target", default=None, metavar="T",
                   help="also build the kernel for instruction set T (avx512, avx2, x86-64 or armv8: the values of "
                        "SSAMBA_CPU_TARGET) and time it against this process's build, alternated run by run, with "
                        "each build's own bound")
    p.set_defaults(func=cmd_bench_scan)


def _add_model_parser(sub) -> None:
    p = sub.add_parser("model", help=_plain(cmd_bench_model.__doc__), description=_MODEL_DESCRIPTION,
                       formatter_class=_Formatter)
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODEL_SPECS), metavar="SPEC",
                   help=_MODEL_SPEC_HELP + "; the first is compared with the others")
    p.add_argument("--tokens", type=at_least(1), nargs="+", default=None, metavar="N",
                   help=f"patch-token counts (default {' '.join(map(str, DEFAULT_TOKENS))}; "
                        f"with --quick {' '.join(map(str, QUICK_TOKENS))}); rounded up to whole patch columns")
    p.add_argument("--quick", action="store_true",
                   help="fewer token counts (unless --tokens), no warm-up, one timed run per configuration")
    p.add_argument("--batch-size", type=at_least(1), default=1, help="clips per forward")
    p.add_argument("--warmup", type=at_least(0), default=None,
                   help="untimed forwards before timing (default 1; 0 with --quick)")
    p.add_argument("--repeats", type=at_least(1), default=None,
                   help="timed forwards per configuration, median reported (default 3; 1 with --quick)")
    p.add_argument("--time-budget", type=positive_float, default=60.0, metavar="S",
                   help="stop timing a configuration once its timed runs took this many seconds (at least one "
                        "run); a warm-up forward that alone takes this long is reported as the single "
                        "(cold) run instead of being repeated")
    p.add_argument("--timeout", type=positive_float, default=1200.0, metavar="S",
                   help="kill a configuration's process after this many seconds and mark it 'timeout'")
    p.add_argument("--max-memory-gb", type=positive_float, default=16.0, metavar="GB",
                   help="skip (and mark) configurations whose estimated peak memory exceeds this")
    p.add_argument("--threads", type=at_least(1), default=None, help="torch threads in each process (default: torch's default)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... or auto (cuda when available)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="autocast dtype of the timed calls (fp32: none); bf16 and fp16 are for GPUs")
    p.add_argument("--slope-range", type=at_least(1), nargs=2, default=[2048, 22000], metavar=("LO", "HI"),
                   help="token range of the fitted log-log slopes reported besides the all-points fit")
    p.add_argument("--seed", type=int, default=0, help="seed of model initialisation and the random input")
    p.add_argument("--out", default="bench-model", metavar="DIR", help="folder for the CSV, plot and summary")
    p.set_defaults(func=cmd_bench_model)


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help=_plain(cmd_bench_train.__doc__), description=_TRAIN_DESCRIPTION,
                       formatter_class=_Formatter)
    p.add_argument("--models", nargs="+", default=list(DEFAULT_TRAIN_SPECS), metavar="SPEC",
                   help=_MODEL_SPEC_HELP + "; the first is compared with the others")
    p.add_argument("--frames", type=at_least(1), nargs="+", default=list(DEFAULT_TRAIN_FRAMES), metavar="T",
                   help="input lengths in frames (10 ms each: 100 = 1 s, 1024 = the recipes' 10.24 s), "
                        "padded up to whole 16-frame patches (100 -> 112)")
    p.add_argument("--batch-size", type=at_least(1), default=2, help="clips per step")
    p.add_argument("--warmup", type=at_least(0), default=1, help="untimed steps first")
    p.add_argument("--repeats", type=at_least(1), default=3, help="timed steps, median reported")
    p.add_argument("--mask-ratio", type=float, default=400 / 512,
                   help="fraction of patches masked (the recipe's 400 of 512; at least one patch)")
    p.add_argument("--timeout", type=positive_float, default=1200.0, metavar="S",
                   help="kill a configuration's process after this many seconds and mark it 'timeout'")
    p.add_argument("--threads", type=at_least(1), default=None, help="torch threads in each process (default: torch's default)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... or auto (cuda when available)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="autocast dtype of the timed calls (fp32: none); bf16 and fp16 are for GPUs")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, input and masks")
    p.add_argument("--under-load", action="store_true",
                   help="time each configuration again while a second process keeps the cores busy "
                        "(started and stopped by the benchmark) and print the slowdowns")
    p.add_argument("--out", default=None, metavar="DIR", help="also write train_bench.csv into this folder")
    p.set_defaults(func=cmd_bench_train)


def _add_embed_parser(sub) -> None:
    p = sub.add_parser("embed", help=_plain(cmd_bench_embed.__doc__), formatter_class=_Formatter,
                       description="Time `ssamba embed` on seeded short clips (tones in noise, 0.5-1.5 s) in "
                                   "a fresh process; with --under-load again beside a second process that "
                                   "keeps the cores busy, and print the slowdown.")
    p.add_argument("--files", type=at_least(1), default=140, help="number of clips")
    p.add_argument("--checkpoint", default="ssamba_tiny",
                   help="model directory or preset name (random weights) passed to ssamba embed")
    p.add_argument("--seed", type=int, default=0, help="seed of the clips")
    p.add_argument("--timeout", type=positive_float, default=1800.0, metavar="S", help="limit for each embed run")
    p.add_argument("--under-load", action="store_true", help="time it again beside a competing process")
    p.set_defaults(func=cmd_bench_embed)


def _add_long_parser(sub) -> None:
    p = sub.add_parser("long", help=_plain(cmd_bench_long.__doc__), formatter_class=_Formatter,
                       description="Embed seeded files of --minutes minutes (noise-modulated tones) with each "
                                   "model in each mode, every run a fresh `ssamba embed` process, and print "
                                   "its wall time and peak resident memory. A model whose run times out is not "
                                   "run on longer files. --needle also embeds each file with a 1 s chirp in "
                                   "its middle and prints how far from the chirp (s) the timestamp embeddings "
                                   "change by more than 0.1% of their norm.")
    p.add_argument("--minutes", type=positive_float, nargs="+", default=[1.0, 5.0, 20.0, 60.0], help="file lengths")
    p.add_argument("--models", nargs="+", default=["ssamba_tiny", "ssast_tiny_patch"], metavar="MODEL",
                   help="presets (random weights) or model folders, passed to ssamba embed --checkpoint")
    p.add_argument("--modes", nargs="+", default=["whole"], choices=["whole", "windows"],
                   help="whole: one encoder pass per file (--whole); windows: the model's input length at a time")
    p.add_argument("--rate", type=at_least(1), default=16000, help="sample rate of the files")
    p.add_argument("--channels", type=at_least(1), default=1, help="channels of the files")
    p.add_argument("--needle", action="store_true", help="also measure how far a 1 s chirp in the middle reaches")
    p.add_argument("--timeout", type=positive_float, default=900.0, metavar="S", help="limit for each embed run")
    p.add_argument("--out", default=None, metavar="DIR", help="also write long_audio.csv into this folder")
    p.set_defaults(func=cmd_bench_long)


def _add_onnx_parser(sub) -> None:
    p = sub.add_parser("onnx", help=_plain(cmd_bench_onnx.__doc__), formatter_class=_Formatter,
                       description="Export each preset (random weights) as `ssamba export` does, then time "
                                   "onnxruntime (CPU) and PyTorch on the same random spectrograms at each "
                                   "length, and print the largest difference, both times and their ratio. "
                                   "Needs pip install 'ssamba[onnx]'.")
    p.add_argument("--models", nargs="+", default=["ssamba_tiny", "ssast_tiny_patch"], metavar="PRESET",
                   help="presets to export")
    p.add_argument("--frames", type=at_least(1), nargs="+", default=[1024, 4096], metavar="T",
                   help="input lengths in 10 ms frames (at least 32)")
    p.add_argument("--batch-size", type=at_least(1), default=1, help="spectrograms per forward")
    p.add_argument("--repeats", type=at_least(1), default=3, help="timed runs of each, median reported")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the inputs")
    p.add_argument("--out", default=None, metavar="DIR", help="also write onnx_bench.csv into this folder")
    p.set_defaults(func=cmd_bench_onnx)


def main(argv: list[str] | None = None) -> int:
    """``python -m ssamba.benchmarks.cli scan ...``: the bench commands without the ssamba CLI."""
    parser = argparse.ArgumentParser(prog="ssamba")
    add_bench_parser(parser.add_subparsers(dest="command", metavar="COMMAND"))
    args = parser.parse_args(["bench", *(argv if argv is not None else __import__("sys").argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
