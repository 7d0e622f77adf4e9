"""Which pretraining recipe (learning rate, warm-up, batch) suits each family at the demo's scale?

Pretrains the demo's encoder of ``--family`` once per recipe given, through the demo's own
pretraining (``ssamba.demo``: same pool, model, masking and objective), and judges each
recipe on what the demo may look at before its test sets:

* the masked-patch accuracy (official definition) on the pool's validation clips, at
  every validation period (``--periods`` per run);
* a linear probe of the final encoder on each task's *validation* split: every layer's
  mean-pooled tokens, the probe fitted on the first seed's training clips, the best
  layer's validation accuracy. Test sets are never read.

One row per recipe is appended to ``--csv`` (a recipe already there is skipped, so a
killed sweep resumes where it stopped); ``--table`` prints the CSV as a Markdown table.

    python lab/pretrain_sweep.py --family ssast --steps 1200 \\
        --recipe lr=1e-3,warmup=50,batch=32 --recipe lr=3e-4,warmup=50,batch=32
    python lab/pretrain_sweep.py --table --csv docs/pretrain_sweep.csv

Budgets are steps, so rows are the same on any machine; the wall time column is this
machine's.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from pathlib import Path

RECIPE_KEYS = {"lr": float, "warmup": int, "batch": int}
COLUMNS = ["family", "steps", "lr", "warmup", "batch", "pool", "valid_acc_by_step", "final_valid_acc",
           "probe_kws", "probe_speaker", "probe_sounds", "seconds"]


def parse_recipe(text: str) -> dict:
    """``"lr=1e-3,warmup=50,batch=32"`` -> ``{"lr": 0.001, "warmup": 50, "batch": 32}``."""
    recipe = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        if key not in RECIPE_KEYS or not value:
            raise argparse.ArgumentTypeError(f"{item!r}: give key=value with keys {', '.join(RECIPE_KEYS)}")
        recipe[key] = RECIPE_KEYS[key](value)
    missing = set(RECIPE_KEYS) - set(recipe)
    if missing:
        raise argparse.ArgumentTypeError(f"{text!r} lacks {', '.join(sorted(missing))}")
    return recipe


def validation_probe(encoder, suite, settings, stats, task: str) -> float:
    """Best layer's validation accuracy of a linear probe (first seed's training clips)."""
    import torch

    from ssamba import demo
    from ssamba.training.probe import layer_embeddings, linear_probe

    data = demo._probe_data(suite, task, settings, stats, seed=0)
    take = torch.randperm(len(data["train"][1]), generator=torch.Generator().manual_seed(1000))
    take = take[:settings.probe_train_clips]
    train = layer_embeddings(encoder, data["train"][0][take])
    valid = layer_embeddings(encoder, data["validation"][0])
    accuracy = linear_probe(train, data["train"][1][take], [(valid, data["validation"][1])], data["classes"])
    return float(accuracy[0].max())


def run_recipe(family: str, steps: int, periods: int, recipe: dict, suite, stats, pool, out: Path) -> dict:
    from ssamba import demo
    from ssamba.models import load_model

    settings = dataclasses.replace(demo.MODES["default"], pretrain_steps=steps, periods=periods,
                                   batch_size=recipe["batch"], pretrain_lr=recipe["lr"])
    started = time.perf_counter()
    demo._pretrain(family, settings, suite, stats, out, seed=0, progress=False, pool=pool,
                             overrides={"optim.warmup_steps": recipe["warmup"]})
    seconds = time.perf_counter() - started
    with open(out / "metrics.csv", newline="") as handle:
        curve = [(int(float(r["step"])), float(r["valid_acc"])) for r in csv.DictReader(handle) if r.get("valid_acc")]
    encoder = load_model(out / "final").eval()
    row = {"family": family, "steps": steps, **recipe, "pool": pool.name,
           "valid_acc_by_step": " ".join(f"{s}:{100 * a:.1f}" for s, a in curve),
           "final_valid_acc": round(100 * curve[-1][1], 1) if curve else ""}
    for task in demo.TASKS:
        row[f"probe_{task}"] = round(100 * validation_probe(encoder, suite, settings, stats, task), 1)
    row["seconds"] = round(seconds)
    return row


def print_table(path: Path) -> None:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    head = ["family", "lr", "warm-up", "batch", "steps", "masked-patch acc. (valid) by step", "probe kws",
            "probe speaker", "probe sounds", "pretraining s"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for r in rows:
        print(f"| {r['family']} | {r['lr']} | {r['warmup']} | {r['batch']} | {r['steps']} | "
              f"{r['valid_acc_by_step']} | {r['probe_kws']} | {r['probe_speaker']} | {r['probe_sounds']} | "
              f"{r['seconds']} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="ssast", choices=("ssamba", "ssast", "mambaout"))
    p.add_argument("--recipe", action="append", type=parse_recipe, default=[],
                   help="lr=L,warmup=W,batch=B (repeat for several recipes)")
    p.add_argument("--steps", type=int, default=1200, help="pretraining steps per recipe")
    p.add_argument("--periods", type=int, default=8, help="validation periods per run")
    p.add_argument("--csv", default="docs/pretrain_sweep.csv", help="rows are appended here")
    p.add_argument("--out", default="runs/pretrain_sweep", help="parent folder of the runs")
    p.add_argument("--table", action="store_true", help="print --csv as a Markdown table and stop")
    args = p.parse_args(argv)
    path = Path(args.csv)
    if args.table:
        print_table(path)
        return 0
    if not args.recipe:
        p.error("give at least one --recipe")

    from ssamba import demo
    from ssamba.corpora import build_suite
    from ssamba.data import compute_stats

    suite = build_suite(None, seed=0, scale="default", progress=False)
    stats = compute_stats(suite.manifest("unlabeled", "train"), max_clips=200)
    pool = demo.pretraining_pool(suite, demo.MODES["default"], Path(args.out))
    done = set()
    if path.is_file():
        with open(path, newline="") as handle:
            done = {(r["family"], int(r["steps"]), float(r["lr"]), int(r["warmup"]), int(r["batch"]), r["pool"])
                    for r in csv.DictReader(handle)}
    for recipe in args.recipe:
        key = (args.family, args.steps, recipe["lr"], recipe["warmup"], recipe["batch"], pool.name)
        if key in done:
            print(f"{args.family} {recipe}: in {path} already", flush=True)
            continue
        name = f"{args.family}_lr{recipe['lr']:g}_wu{recipe['warmup']}_b{recipe['batch']}_{args.steps}"
        row = run_recipe(args.family, args.steps, args.periods, recipe, suite, stats, pool, Path(args.out) / name)
        new = not path.is_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
