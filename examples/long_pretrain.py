"""Long pretraining of the demo's encoders, resumable across sittings and machines.

Pretrains the demo's ``--family`` encoder exactly as ``ssamba demo`` does (same suite,
pool with its real recordings, model, masking, objective, seed), only for longer, in
stages: the run stops at each step of ``--snapshots``, keeps that encoder (weights and
config only, a few MB) in ``<out>/snapshots/step-<N>/`` for the gain-against-compute
curve, and goes on. A checkpoint (encoder, heads, optimiser, schedule) is written every
``--save-every`` steps, so a killed run, or one resumed from a fresh clone where ``<out>``
was committed, continues from it and reaches the same weights. Validation (masked-patch
accuracy on the pool's validation clips) runs every ``--valid-every`` steps into
``<out>/metrics.csv``.

    python examples/long_pretrain.py --family ssamba --out long_runs/ssamba            # to 10,000 steps
    python examples/long_pretrain.py --family ssamba --out long_runs/ssamba --ship ssamba-demo  # then ship it
    python examples/long_pretrain.py --family ssast --lr 1e-3 --out long_runs/ssast --snapshots 600 2000 5000 10000 20000

The learning-rate schedule is constant after warm-up (the demo's), so the first N steps
of a long run are the demo's N-step pretraining, step for step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import subprocess
import time
from pathlib import Path


def snapshot(run: Path, step: int) -> Path:
    """Copy the run's final encoder (weights + config) to ``snapshots/step-<step>``."""
    target = run / "snapshots" / f"step-{step:06d}"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("model.safetensors", "config.json"):
        shutil.copy2(run / "final" / name, target / name)
    return target


def ship(run: Path, name: str, step: int) -> Path:
    """Put the run's encoder at ``step`` into the package as the shipped encoder ``name``
    (:mod:`ssamba.models.shipped`): weights and config, the recipe, the curves, and where
    and how it was trained."""
    from ssamba.models.shipped import SHIPPED_ROOT

    record = json.loads((run / "long_run.json").read_text())
    target = SHIPPED_ROOT / name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for source, file in ((run / "snapshots" / f"step-{step:06d}", "model.safetensors"),
                         (run / "snapshots" / f"step-{step:06d}", "config.json"),
                         (run, "experiment.json"), (run, "metrics.csv")):
        shutil.copy2(source / file, target / file)
    provenance = {"name": name, "steps": step, "commit": record["started_at_commit"], "recipe": record["recipe"],
                  "sittings": record["sittings"],
                  "how": "examples/long_pretrain.py, resumed across sittings from checkpoints committed in "
                         f"long_runs/{run.name}; see docs/pretraining.md"}
    (target / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    return target


def commit_of_tree() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    from ssamba import demo

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="ssamba", choices=sorted(demo.MODES["default"].models))
    p.add_argument("--out", required=True, help="the run's folder (resumed when it holds a checkpoint)")
    p.add_argument("--snapshots", type=int, nargs="+", default=[600, 2000, 5000, 10000],
                   help="steps at which the encoder is kept; the last is where the run ends")
    p.add_argument("--lr", type=float, default=demo.MODES["default"].pretrain_lr, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=50, help="linear warm-up steps")
    p.add_argument("--batch-size", type=int, default=demo.MODES["default"].batch_size)
    p.add_argument("--seed", type=int, default=0, help="seed of the suite, the pool and the run")
    p.add_argument("--save-every", type=int, default=250, help="steps between checkpoints")
    p.add_argument("--valid-every", type=int, default=500, help="steps between validations")
    p.add_argument("--scale", default="default", choices=sorted(demo.MODES),
                   help="the demo mode whose suite, pool and model sizes are used (quick: smoke runs)")
    p.add_argument("--ship", metavar="NAME", default=None,
                   help="when the last stage is done, ship its encoder in the package under NAME "
                        "(ssamba.load_model(NAME) loads it)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    stages = sorted(set(args.snapshots))
    if not stages or stages[0] < 1:
        p.error("--snapshots must be positive step counts")

    import torch

    from ssamba.corpora import build_suite
    from ssamba.data import compute_stats

    out = Path(args.out)
    default = demo.MODES[args.scale]
    suite = build_suite(None, seed=args.seed, scale=default.scale, progress=not args.no_progress)
    stats = compute_stats(suite.manifest("unlabeled", "train"), max_clips=200)
    pool = demo.pretraining_pool(suite, default, out, progress=not args.no_progress)
    recipe = {"family": args.family, "scale": args.scale, "lr": args.lr, "warmup": args.warmup, "batch_size": args.batch_size,
              "seed": args.seed, "pool": pool.name}
    code = commit_of_tree()  # the code this process runs (read now: the tree may move on while it trains)
    info = out / "long_run.json"
    if info.is_file():
        before = json.loads(info.read_text())
        if before["recipe"] != recipe:
            p.error(f"{out} holds a run of another recipe: {before['recipe']} (this one: {recipe})")
    else:
        out.mkdir(parents=True, exist_ok=True)
        info.write_text(json.dumps({"recipe": recipe, "started_at_commit": code, "sittings": []},
                                   indent=1))
    for target in stages:
        if (out / "snapshots" / f"step-{target:06d}").is_dir():
            continue
        settings = dataclasses.replace(default, pretrain_steps=target, batch_size=args.batch_size,
                                       pretrain_lr=args.lr, periods=math.ceil(target / args.valid_every))
        overrides = {"optim.warmup_steps": args.warmup, "run.steps_per_epoch": args.valid_every,
                     "run.save_every": args.save_every, "run.keep_checkpoints": 1}
        started = time.perf_counter()
        summary = demo._pretrain(args.family, settings, suite, stats, out, args.seed, not args.no_progress,
                                 overrides=overrides, pool=pool, resume=True)
        snapshot(out, summary["steps"])
        record = json.loads(info.read_text())
        record["sittings"].append({"to_step": summary["steps"], "seconds": round(time.perf_counter() - started),
                                   "threads": torch.get_num_threads(), "commit": code})
        info.write_text(json.dumps(record, indent=1))
        print(f"{args.family}: step {summary['steps']} kept in {out / 'snapshots'}", flush=True)
    if args.ship:
        print(f"{args.family}: step {stages[-1]} shipped as {args.ship} in {ship(out, args.ship, stages[-1])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
