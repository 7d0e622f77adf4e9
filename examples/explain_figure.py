"""The README's explain figure: the demo's pretrained SSAMBA and SSAST on one keyword clip.

Pretrains both families exactly as ``ssamba demo`` (default mode, seed 0) does - the same
recipe and seed give the same models as the demo's ``pretrain_ssamba`` / ``pretrain_ssast``
- unless ``OUT/pretrain_*/final`` exists already (pass ``--models DIR`` to use a demo's
output folder instead), then runs ``ssamba explain`` on the first keyword-spotting test
clip of the offline suite with SSAST drawn beside SSAMBA.

    python examples/explain_figure.py [--out runs/explain_figure] [--models demo_out]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv=None) -> int:
    from ssamba import demo
    from ssamba.corpora import build_suite
    from ssamba.data import compute_stats, read_manifest
    from ssamba.interfaces.explain import explain_file

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/explain_figure", help="folder for the models (if trained) and the maps")
    p.add_argument("--models", default=None, help="a demo output folder holding pretrain_ssamba and pretrain_ssast")
    args = p.parse_args(argv)

    out = Path(args.out)
    models = Path(args.models) if args.models else out
    settings = demo.MODES["default"]
    suite = build_suite(None, seed=0, scale=settings.scale, progress=False)
    for family in ("ssamba", "ssast"):
        if not (models / f"pretrain_{family}" / "final" / "model.safetensors").is_file():
            stats = compute_stats(suite.manifest("unlabeled", "train"), max_clips=200)
            started = time.perf_counter()
            demo._pretrain(family, settings, suite, stats, models / f"pretrain_{family}", seed=0, progress=False)
            print(f"pretrained {family} in {time.perf_counter() - started:.0f} s", flush=True)
    clip = read_manifest(suite.manifest("kws", "test"))[0]
    summary = explain_file(clip.wav, models / "pretrain_ssamba" / "final", out / "maps",
                           compare=models / "pretrain_ssast" / "final", progress=False)
    print(json.dumps({"clip": clip.wav, "labels": list(clip.labels), **summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
