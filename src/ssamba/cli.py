"""The ``ssamba`` command line.

Each subcommand is a small function over the public API; heavy imports (torch) happen
inside the functions so that ``ssamba --help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys


def cmd_models(args: argparse.Namespace) -> int:
    """List the model presets with their geometry and parameter counts."""
    import torch

    from . import get_config, list_models
    from .models import model_from_config

    names = list_models(args.pattern)
    if not names:
        print(f"no preset matches {args.pattern!r}; try 'ssamba models'", file=sys.stderr)
        return 1
    header = f"{'preset':<20} {'family':<7} {'D':>4} {'depth':>5} {'kernel':>7} {'stride':>7} {'tokens':>7} {'params':>9}"
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
            f"{name:<20} {model.family:<7} {config.embed_dim:>4} {config.depth:>5} {kernel:>7} "
            f"{stride:>7} {model.num_patches:>7} {params / 1e6:>8.2f}M"
        )
    print(
        "\ntokens: patches for the preset's input of "
        f"{get_config(names[0]).input_fdim} mel bins x input_tdim frames (1024 = 10.24 s); "
        "params: encoder without heads or mask embedding."
    )
    return 0


def cmd_fbank(args: argparse.Namespace) -> int:
    """Compute the normalised log-mel input of an audio file and save it as .npy."""
    import numpy as np

    from .frontend import FrontendConfig, LogMelFrontend, load_audio

    config = FrontendConfig.for_dataset(args.stats, target_length=args.target_length)
    frontend = LogMelFrontend(config)
    try:
        wave = load_audio(args.audio, sample_rate=config.sample_rate)
        spec = frontend(wave)[0]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    frames = frontend.fbank(wave).shape[1]
    print(
        f"{args.audio}: {wave.numel() / config.sample_rate:.2f} s -> {frames} frames, "
        f"padded/cropped to {tuple(spec.shape)} (T, F); mean {spec.mean():.3f}, std {spec.std():.3f}"
    )
    if args.out:
        np.save(args.out, spec.numpy())
        print(f"saved {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssamba",
        description="Self-supervised audio Mamba (SSAMBA) and transformer (SSAST) encoders.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("models", help=cmd_models.__doc__, description=cmd_models.__doc__)
    p.add_argument("pattern", nargs="?", default="*", help="glob over preset names, e.g. 'ssamba_*'")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("fbank", help=cmd_fbank.__doc__, description=cmd_fbank.__doc__)
    p.add_argument("audio", help="audio file (any rate or channel count: resampled to 16 kHz mono)")
    p.add_argument("--out", help="write the (T, F) features to this .npy file")
    p.add_argument("--target-length", type=int, default=1024, help="frames after padding/cropping (default 1024)")
    p.add_argument(
        "--stats",
        default="audioset",
        choices=["audioset", "esc50", "speechcommands"],
        help="dataset statistics to normalise with (default audioset)",
    )
    p.set_defaults(func=cmd_fbank)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
