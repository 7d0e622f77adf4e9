"""``ssamba corpus ...``: build (or reuse) the offline audio suite.

Wired into the main parser with ``add_corpus_parser(sub)``; nothing heavy is imported
until the command runs.
"""

from __future__ import annotations

import argparse
import json

_SCALES = ("default", "quick", "mini")


def cmd_corpus_build(args: argparse.Namespace) -> int:
    """Synthesise the offline suite (kws, speaker, sounds, unlabeled) or reuse its cache, and
    cut the real recordings of the pretraining pool (Debian packages fetched by
    scripts/setup.sh) into clips; print what each holds."""
    from pathlib import Path

    from ..errors import UserError
    from . import build_suite, default_root
    from .recordings import build_recordings, recordings_dir
    from .speech import EspeakError

    root = args.root or str(default_root(args.scale, args.seed))
    try:
        suite = build_suite(
            root, seed=args.seed, scale=args.scale, progress=not args.quiet, workers=args.workers, force=args.force
        )
    except EspeakError as err:  # espeak-ng missing or broken: the setup step fixes it
        raise UserError(str(err)) from err
    recorded = None
    if not args.no_recordings:
        recorded = build_recordings(Path(suite.root).parent / f"recorded-{args.scale}-seed{args.seed}", seed=args.seed,
                                    scale=args.scale, progress=not args.quiet, workers=args.workers, force=args.force)
    if args.json:
        recordings = None if recorded is None else {"root": str(recorded.root), "sources": recorded.sources,
                                                    "missing_packages": recorded.missing}
        print(json.dumps({"root": str(suite.root), "reused": suite.reused, **suite.to_json(),
                          "recordings": recordings}, indent=1))
        return 0
    state = "reused" if suite.reused else f"built in {suite.build_seconds:.1f} s"
    print(f"{args.scale} suite, seed {args.seed}, {state}: {suite.root}")
    print(suite.table())
    print("\nmanifests: <root>/<task>/{train,validation,test}.json, labels: <root>/<task>/labels.csv")
    if args.no_recordings:
        return 0
    if recorded is None:
        print(f"\nno real recordings found in {recordings_dir()} or installed: the pretraining pool is the "
              "synthetic one (scripts/setup.sh fetches them from Debian's packages)")
        return 0
    state = "reused" if recorded.reused else f"cut in {recorded.build_seconds:.1f} s"
    print(f"\nreal recordings for the pretraining pool ({state}): {recorded.root}")
    print(recorded.table())
    if recorded.missing:
        print(f"not found (the pool goes without them): {', '.join(recorded.missing)}")
    print("manifests: <root>/{train,validation}.json; labels are the kinds (speech, music, effects)")
    return 0


def add_corpus_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``corpus build`` on the ``ssamba`` command's subparsers."""
    corpus = subparsers.add_parser(
        "corpus",
        help="The offline audio suite (espeak-ng speech, SoundFont instruments) and the real recordings "
        "of the pretraining pool.",
        description="The offline audio suite: keyword spotting, speaker identification, instrument "
        "families and an unlabeled pretraining pool, synthesised from a seed; the pool also takes real "
        "recordings of speech, music and sound effects that Debian packages ship.",
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
    p.add_argument("--no-progress", "--quiet", dest="quiet", action="store_true",
                   help="no progress bar (--quiet: the earlier spelling)")
    p.add_argument("--json", action="store_true", help="print the suite description as JSON")
    p.add_argument("--no-recordings", action="store_true",
                   help="the synthetic suite only: do not cut the real recordings of the pretraining pool")
    p.set_defaults(func=cmd_corpus_build)
    return corpus
