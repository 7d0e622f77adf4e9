"""``ssamba convert``: an official SSAMBA / SSAST ``.pth`` -> an ssamba model directory.

Nothing heavy is imported at module level: torch comes in with the command.
"""

from __future__ import annotations

import argparse

_DATASETS = ("audioset", "esc50", "speechcommands")


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert an official SSAMBA or SSAST checkpoint (.pth) into an ssamba model directory."""
    from pathlib import Path

    from ssamba.models.official import convert_official, write_converted

    out = Path(args.out_dir)
    if (out / "model.safetensors").exists() and not args.overwrite:
        raise FileExistsError(f"{out} already holds a model; pass --overwrite to replace it")
    options = {}
    if args.input_tdim is not None:
        options["input_tdim"] = args.input_tdim
    if args.patch_stride is not None:
        options["patch_stride"] = tuple(args.patch_stride)
    if args.num_heads is not None:
        options["num_heads"] = args.num_heads
    if args.dataset is not None:
        options["dataset"] = args.dataset
    if args.pooling is not None:
        options["pooling"] = args.pooling
    converted = convert_official(args.official, **options)
    write_converted(converted, out)
    print(converted.info.summary())
    written = "model.safetensors, config.json, conversion.json"
    if converted.objective_state:
        written += ", objective.safetensors (pretraining heads), objective.json"
    print(f"wrote {out} ({written})")
    return 0


def add_convert_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``convert`` on the ``ssamba`` command's sub-parsers."""
    p = subparsers.add_parser(
        "convert",
        help=cmd_convert.__doc__,
        description=cmd_convert.__doc__ + (
            " Family, size, patch kernel, pretraining vs fine-tuned, classes, norm and mixer variant are"
            " read from the tensors; the patch stride and input length of fine-tuned files are inferred"
            " from the position embedding and the official recipes (override them when asked)."
            " Files are read with torch.load(weights_only=True): nothing is unpickled beyond tensors."
        ),
    )
    p.add_argument("official", metavar="OFFICIAL.pth", help="checkpoint saved by the official SSAMBA or SSAST code")
    p.add_argument("out_dir", metavar="OUT_DIR", help="model directory to write")
    p.add_argument("--input-tdim", type=int, default=None, metavar="N",
                   help="input frames the model was trained with (default: inferred)")
    p.add_argument("--patch-stride", type=int, nargs=2, default=None, metavar=("F", "T"),
                   help="patch stride in frequency and time (default: inferred)")
    p.add_argument("--num-heads", type=int, default=None, metavar="H",
                   help="SSAST attention heads, for widths other than 192/384/768")
    p.add_argument("--dataset", choices=_DATASETS, default=None,
                   help="front-end statistics to store with the model (default: by the recipe)")
    p.add_argument("--pooling", choices=("mean", "cls"), default=None,
                   help="classifier pooling: mean (official ft_avgtok, default) or cls (ft_cls)")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in OUT_DIR")
    p.set_defaults(func=cmd_convert)
    return p
