"""Which pretraining recipe pays? Pretrain the demo's SSAMBA with one variant, probe it.

Runs the default demo's SSAMBA (or ``--family``'s) pretraining with the settings and objective options
given, then the demo's linear probe (every layer, layer chosen on validation, the first
seed's 800 training clips) on kws, speaker and sounds. Compare with the demo's table
(``ssamba demo``: the same protocol, 3 seeds, with random-init and log-mel rows).

    python lab/pretrain_variants.py NAME '{"num_masked": 18}' [--out DIR]
    python lab/pretrain_variants.py mse_only '{"objective.use_nce": false}'
    python lab/pretrain_variants.py mambaout '{}' --family mambaout   # the default recipe, MambaOut

Keys are :class:`ssamba.demo.DemoSettings` fields or ``objective.*`` options. Prints one
line: the variant, pretraining wall time, and per task (test accuracy %, chosen layer).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path


def main(argv=None) -> int:
    from ssamba import demo
    from ssamba.corpora import build_suite
    from ssamba.data import compute_stats
    from ssamba.models import load_model
    from ssamba.training.probe import layer_embeddings

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name", help="a name for the variant (its run folder)")
    p.add_argument("overrides", help="JSON object of DemoSettings fields and objective.* options")
    p.add_argument("--out", default="runs/pretrain_variants", help="parent folder of the runs")
    p.add_argument("--family", default="ssamba", choices=sorted(demo.MODES["default"].models),
                   help="which of the demo's encoders to pretrain")
    args = p.parse_args(argv)

    overrides = json.loads(args.overrides)
    objective = {k: v for k, v in overrides.items() if k.startswith("objective.")}
    settings = dataclasses.replace(demo.MODES["default"],
                                   **{k: v for k, v in overrides.items() if k not in objective})
    suite = build_suite(None, seed=0, scale="default", progress=False)
    stats = compute_stats(suite.manifest("unlabeled", "train"), max_clips=200)
    out = Path(args.out) / args.name
    started = time.perf_counter()
    demo._pretrain(args.family, settings, suite, stats, out, seed=0, progress=False, overrides=objective)
    result = {"pretrain_seconds": round(time.perf_counter() - started)}
    encoder = load_model(out / "final").eval()
    for task in demo.TASKS:
        data = demo._probe_data(suite, task, settings, stats, seed=0)
        features = demo._features(lambda spec: layer_embeddings(encoder, spec), data)
        probe = demo._probe(features, data, settings, seed=0)
        result[task] = (round(100 * probe["test"], 1), probe["layer"])
    print(args.name, args.family, overrides, result, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
