"""The ``ssamba`` command line.

Each subcommand is a small function over the public API; heavy imports (torch) happen
inside the functions so that ``ssamba --help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys

from .argtypes import at_least
from .errors import USER_ERRORS, UserError, one_line
from .fileio import strict_json


def cmd_models(args: argparse.Namespace) -> int:
    """List the model presets with their geometry and parameter counts, and the
    pretrained encoders shipped with the package."""
    import torch

    from . import get_config, list_models
    from .models import model_from_config

    names = list_models(args.pattern)
    if not names:
        raise UserError(f"no preset matches {args.pattern!r}; 'ssamba models' lists them all")
    header = f"{'preset':<20} {'family':<8} {'D':>4} {'depth':>5} {'kernel':>7} {'stride':>7} {'tokens':>7} {'params':>9}"
    print(header)
    print("-" * len(header))
    for name in names:
        config = get_config(name)
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            model = model_from_config(config)
        params = sum(p.numel() for n, p in model.named_parameters() if n != "mask_embed")
        kernel = "x".join(map(str, config.patch_size))
        stride = "x".join(map(str, config.patch_stride))
        print(
            f"{name:<20} {model.family:<8} {config.embed_dim:>4} {config.depth:>5} {kernel:>7} "
            f"{stride:>7} {model.num_patches:>7} {params / 1e6:>8.2f}M"
        )
    print(
        "\ntokens: patches for the preset's input of "
        f"{get_config(names[0]).input_fdim} mel bins x input_tdim frames (1024 = 10.24 s); "
        "params: encoder without heads or mask embedding."
    )
    _print_shipped()
    return 0


def _print_shipped() -> None:
    """The pretrained encoders shipped with the package, which load by name."""
    import json

    from .models.shipped import shipped_dir, shipped_names

    names = shipped_names()
    if not names:
        return
    print("\npretrained encoders shipped with ssamba (load by name: ssamba.load_model(NAME), --checkpoint NAME):")
    for name in names:
        provenance = json.loads((shipped_dir(name) / "provenance.json").read_text())
        recipe = provenance["recipe"]
        print(f"  {name:<18} {recipe['family']}, the demo's encoder pretrained {provenance['steps']} steps at batch "
              f"{recipe['batch_size']} on the demo's pool (lr {recipe['lr']:g}); see docs/pretraining.md")


def cmd_fbank(args: argparse.Namespace) -> int:
    """Compute the normalised log-mel input of an audio file and save it as .npy."""
    import numpy as np

    from .frontend import FrontendConfig, LogMelFrontend, load_audio

    config = FrontendConfig.for_dataset(args.stats, target_length=args.target_length)
    frontend = LogMelFrontend(config)
    wave = load_audio(args.audio, sample_rate=config.sample_rate)
    spec = frontend(wave)[0]
    frames = frontend.num_frames(wave.numel())
    print(
        f"{args.audio}: {wave.numel() / config.sample_rate:.2f} s -> {frames} frames, "
        f"padded/cropped to {tuple(spec.shape)} (T, F); mean {spec.mean():.3f}, std {spec.std():.3f}"
    )
    if args.out:
        from .fileio import atomic_write

        def write(tmp: str) -> None:
            with open(tmp, "wb") as handle:  # a file object: np.save adds no suffix
                np.save(handle, spec.numpy())

        atomic_write(args.out, write)
        print(f"saved {args.out}")
    return 0


class _Options(str):
    """Placeholder epilog of a training command, expanded only when help is printed."""

    def __new__(cls, task: str):
        value = super().__new__(cls, f"(experiment options of {task})")
        value.task = task
        return value


class _OptionsFormatter(argparse.RawDescriptionHelpFormatter):
    """Expands the options table on demand, so that building the parser imports no torch."""

    def add_text(self, text):
        super().add_text(_options_epilog(text.task) if isinstance(text, _Options) else text)


def _options_epilog(task: str) -> str:
    from .config import describe_fields
    from .training.experiment import ExperimentConfig

    other = {"pretrain": "finetune.", "finetune": "objective."}[task]  # the other task's section
    rows = [row for row in describe_fields(ExperimentConfig) if not row[0].startswith(other) and row[0] != "task"]
    width = max(len(name) for name, _, _ in rows)
    lines = [f"  {name:<{width}}  {default:<14} {text}" for name, default, text in rows]
    return (
        "options (set in the YAML recipe, or override as section.key=value):\n"
        + "\n".join(lines)
    )


def _run_experiment(args: argparse.Namespace, task: str) -> int:
    import logging

    from .allocator import apply_allocator_policy
    from .device import resolve_device
    from .training.experiment import load_experiment, parse_overrides
    from .training.run import finetune, pretrain

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.config and "=" in args.config and not args.config.endswith((".yaml", ".yml")):
        args.overrides, args.config = [args.config, *args.overrides], None  # no recipe, only overrides
    overrides = parse_overrides(args.overrides)
    config = load_experiment(args.config, {"task": task, **overrides})
    if resolve_device(config.run.device) == "cpu":  # the CPU's allocator tuning; a GPU run leaves it alone
        apply_allocator_policy()
    if args.resume and args.overwrite:
        raise UserError("--resume continues the run in run.out_dir and --overwrite replaces it: give one")
    summary = (pretrain if task == "pretrain" else finetune)(config, resume=args.resume, overwrite=args.overwrite)
    print(strict_json(summary, indent=2))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Self-supervised masked patch pretraining (SSAMBA or SSAST) on a manifest of clips."""
    return _run_experiment(args, "pretrain")


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tune a pretrained encoder (model.init_from) or train one from scratch on labelled clips."""
    return _run_experiment(args, "finetune")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Accuracy, mAP, AUC and d-prime of a fine-tuned model on a labelled manifest."""
    from .training.run import evaluate

    metrics = evaluate(args.model, args.manifest, args.labels, loss=args.loss,
                       batch_size=args.batch_size, device=args.device)
    print(strict_json(metrics, indent=2))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Mean and std of the log-mel features of a manifest's clips (for frontend.mean / std)."""
    from .data import compute_stats
    from .frontend import FrontendConfig

    mean, std = compute_stats(args.manifest, FrontendConfig(num_mel_bins=args.num_mel_bins),
                              max_clips=args.max_clips)
    if not std > 0:  # silence (or NaN): normalising by it would make every input inf or nan
        raise UserError(f"the log-mel features of {args.manifest} have std {std:g} (silent clips?); "
                        "they cannot give frontend.std")
    print(f"frontend.mean={mean:.7g} frontend.std={std:.7g}")
    return 0


# the layouts of ssamba.data.LAYOUTS, spelled out so that building the parser imports no torch
_LAYOUTS = ("esc50", "speechcommands", "speechcommands-v1", "speechcommands-v1-12", "voxceleb1", "librispeech",
            "folder")


def cmd_prepare(args: argparse.Namespace) -> int:
    """Write <split>.json manifests and labels.csv for a dataset folder in its published layout."""
    import logging

    from .data import prepare

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = prepare(args.layout, args.root, args.out, labels_from_subfolder=args.labels_from_subfolder,
                      test_set=args.test_set, split=args.split, split_seed=args.seed, group_by=args.group_by)
    width = max(len("split"), *(len(name) for name in summary))
    print(f"{'split':<{width}} {'clips':>8} {'classes':>8} {'skipped':>8}")
    for name, row in summary.items():
        print(f"{name:<{width}} {row['clips']:>8} {row['classes']:>8} {row['skipped']:>8}")
    written = ", ".join(f"{name}.json" for name in summary)
    labels = " and labels.csv" if any(row["classes"] for row in summary.values()) else ""
    print(f"wrote {written}{labels} to {args.out}")
    return 0


def cmd_shard(args: argparse.Namespace) -> int:
    """Pack a manifest's clips into WebDataset tar shards (shard-000000.tar, ... and shards.json)."""
    import logging

    from .data import read_shard_index, write_shards

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = write_shards(args.manifest, args.out, max_clips_per_shard=args.max_clips,
                         max_bytes=int(args.max_mb * 2**20), overwrite=args.overwrite)
    index = read_shard_index(args.out)
    size = sum(row["bytes"] for row in index["shards"])
    print(f"wrote {len(paths)} shard(s) with {index['num_clips']} clips ({size / 2**20:.1f} MiB) to {args.out}"
          + (f"; skipped {index['skipped']} unreadable clip(s)" if index["skipped"] else ""))
    return 0


def _add_data_parsers(sub) -> None:
    """The commands on a data set: evaluate, stats, prepare, shard."""
    p = sub.add_parser("evaluate", help=cmd_evaluate.__doc__, description=cmd_evaluate.__doc__)
    p.add_argument("model", help="model directory, checkpoint, or a fine-tuning run's out_dir")
    p.add_argument("manifest", help="manifest JSON of the clips to score")
    p.add_argument("labels", nargs="?", default=None,
                   help="label CSV (index,mid,display_name) the model was trained with; only for models that do "
                        "not carry their classes (fine-tuned models carry them)")
    p.add_argument("--loss", default=None, choices=["ce", "bce"],
                   help="ce: softmax scores; bce: sigmoid (multi-label); default: the model's own")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("stats", help=cmd_stats.__doc__, description=cmd_stats.__doc__)
    p.add_argument("manifest", help="manifest JSON")
    p.add_argument("--num-mel-bins", type=int, default=128)
    p.add_argument("--max-clips", type=int, default=None, help="use this many clips spread over the manifest")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("prepare", help=cmd_prepare.__doc__, description=cmd_prepare.__doc__)
    p.add_argument("layout", metavar="LAYOUT", choices=_LAYOUTS,
                   help="how ROOT is laid out: " + ", ".join(_LAYOUTS))
    p.add_argument("root", metavar="ROOT", help="the dataset folder as downloaded and unpacked")
    p.add_argument("out", metavar="OUT", help="folder to write <split>.json and labels.csv into")
    p.add_argument("--labels-from-subfolder", action="store_true",
                   help="folder layout: label each file by the sub-folder of ROOT it lies in")
    p.add_argument("--test-set", default=None, metavar="DIR",
                   help="speechcommands-v1-12: use the SUPERB test folder (speech_commands_test_set_v0.01) "
                        "as the test split")
    p.add_argument("--split", default=None, metavar="TRAIN,VALID[,TEST]",
                   help="folder layout: write train/validation/test.json in these proportions (e.g. 80,10,10), "
                        "stratified by label")
    p.add_argument("--seed", type=int, default=None, help="folder layout with --split: the seed of the split (0)")
    p.add_argument("--group-by", default=None, metavar="REGEX",
                   help="folder layout: clips whose paths give the same match (its first group if any) stay in "
                        "one split, e.g. '^[^/]+/(spk[0-9]+)_' keeps a speaker together (implies --split 80,10,10)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("shard", help=cmd_shard.__doc__, description=cmd_shard.__doc__)
    p.add_argument("manifest", metavar="MANIFEST", help="manifest JSON of the clips")
    p.add_argument("out", metavar="OUT", help="folder to write the shards into")
    p.add_argument("--max-clips", type=int, default=1000, metavar="N", help="clips per shard at most (default 1000)")
    p.add_argument("--max-mb", type=float, default=1024, metavar="MB", help="MiB per shard at most (default 1024)")
    p.add_argument("--overwrite", action="store_true", help="replace shards already in OUT")
    p.set_defaults(func=cmd_shard)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssamba",
        description="Self-supervised audio Mamba (SSAMBA) and transformer (SSAST) encoders.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (also SSAMBA_DEBUG=1; allowed anywhere on the line)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("models", help=cmd_models.__doc__, description=cmd_models.__doc__)
    p.add_argument("pattern", nargs="?", default="*", help="glob over preset names, e.g. 'ssamba_*'")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("fbank", help=cmd_fbank.__doc__, description=cmd_fbank.__doc__)
    p.add_argument("audio", help="audio file (any rate or channel count: resampled to 16 kHz mono)")
    p.add_argument("--out", help="write the (T, F) features to this .npy file")
    p.add_argument("--target-length", type=at_least(1), default=1024, help="frames after padding/cropping (default 1024)")
    p.add_argument(
        "--stats",
        default="audioset",
        choices=["audioset", "esc50", "speechcommands"],
        help="dataset statistics to normalise with (default audioset)",
    )
    p.set_defaults(func=cmd_fbank)

    for name, func in (("pretrain", cmd_pretrain), ("finetune", cmd_finetune)):
        p = sub.add_parser(name, help=func.__doc__, description=func.__doc__, epilog=_Options(name),
                           formatter_class=_OptionsFormatter)
        p.add_argument("config", nargs="?", help="YAML recipe (see configs/); omit to start from the defaults")
        p.add_argument("overrides", nargs="*", metavar="section.key=value",
                       help="override any option, e.g. optim.lr=3e-4 run.out_dir=runs/x")
        p.add_argument("--resume", action="store_true",
                       help="continue from the newest checkpoint in run.out_dir/checkpoints")
        p.add_argument("--overwrite", action="store_true",
                       help="replace the run already in run.out_dir (without it, or --resume, such a folder is refused)")
        p.set_defaults(func=func)

    _add_data_parsers(sub)
    from .benchmarks.cli import add_bench_parser
    from .corpora.cli import add_corpus_parser
    from .demo import add_demo_parser
    from .interfaces.cli import add_embed_parser, add_explain_parser, add_export_parser, add_predict_parser
    from .interfaces.convert_cli import add_convert_parser

    add_predict_parser(sub)
    add_embed_parser(sub)
    add_explain_parser(sub)
    add_export_parser(sub)
    add_convert_parser(sub)
    add_corpus_parser(sub)
    add_bench_parser(sub)
    add_demo_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; a user error (:data:`ssamba.errors.USER_ERRORS`) is one
    ``ssamba: error:`` line on stderr and exit status 2, unless ``--debug`` or
    ``SSAMBA_DEBUG=1`` asks for the traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("SSAMBA_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command:
            from .threads import apply_thread_policy

            apply_thread_policy()  # before anything imports torch
        if args.version:
            from . import __version__

            print(__version__)
            return 0
        if not args.command:
            parser.print_help()
            return 0
        return args.func(args)
    except BrokenPipeError:  # the reader went away (ssamba models | head): not an error
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        if debug:
            raise
        print("ssamba: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if debug:
            raise
        print(f"ssamba: error: {one_line(err)}", file=sys.stderr)
        return 2


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
