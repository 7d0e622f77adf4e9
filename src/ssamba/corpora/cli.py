"""``ssamba corpus ...``: build (or reuse) the offline audio suite.

Wired into the main parser with ``add_corpus_parser(sub)``; nothing heavy is imported
until the command runs.
"""

from __future__ import annotations

import argparse
import json

_SCALES = ("default", "quick", "mini")


def cmd_corpus_build(args: argparse.Namespace) -> int:
    """Synthesise the offline suite (kws, speaker, sounds, unlabeled) or reuse its cache."""
    from ..errors import UserError
    from . import build_suite, default_root
    from .speech import EspeakError

    root = args.root or str(default_root(args.scale, args.seed))
    try:
        suite = build_suite(
            root, seed=args.seed, scale=args.scale, progress=not args.quiet, workers=args.workers, force=args.force
        )
    except EspeakError as err:  # espeak-ng missing or broken: the setup step fixes it
        raise UserError(str(err)) from err
    if args.json:
        print(json.dumps({"root": str(suite.root), "reused": suite.reused, **suite.to_json()}, indent=1))
        return 0
    state = "reused" if suite.reused else f"built in {suite.build_seconds:.1f} s"
    print(f"{args.scale} suite, seed {args.seed}, {state}: {suite.root}")
    print(suite.table())
    print("\nmanifests: <root>/<task>/{train,validation,test}.json, labels: <root>/<task>/labels.csv")
    return 0


def add_corpus_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``corpus build`` on the ``ssamba`` command's subparsers."""
    corpus = subparsers.add_parser(
        "corpus",
        help="The offline synthetic audio suite (espeak-ng speech, SoundFont instruments).",
        description="The offline synthetic audio suite: keyword spotting, speaker identification, "
        "instrument families and an unlabeled pretraining pool, synthesised from a seed.",
    )
    corpus.set_defaults(func=lambda args: (corpus.print_help(), 0)[1])
    sub = corpus.add_subparsers(dest="corpus_command", metavar="SUBCOMMAND")
    p = sub.add_parser("build", help=cmd_corpus_build.__doc__, description=cmd_corpus_build.__doc__)
    p.add_argument("--root", default=None, metavar="DIR",
                   help="cache folder of the suite (default: $SSAMBA_CORPUS_DIR or ~/.cache/ssamba/corpora, "
                   "then <scale>-seed<seed>)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the whole suite (default 0)")
    p.add_argument("--scale", default="default", choices=_SCALES,
                   help="default: ~15k clips for CPU training; quick: ~2k clips; mini: ~100 clips (tests)")
    p.add_argument("--workers", type=int, default=None, help="synthesis processes (default: the CPU cores, at most 8)")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache matches")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the suite description as JSON")
    p.set_defaults(func=cmd_corpus_build)
    return corpus
