"""Gain against compute: linear-probe accuracy of the long runs' snapshots against pretraining steps.

For each task of the demo (kws, speaker, sounds), probes every snapshot that
``examples/long_pretrain.py`` kept in each run folder, plus the same architecture at
random init (a fresh init per seed, as the demo does) and the pooled log-mel
spectrogram, with the demo's own protocol (``ssamba.demo``: every layer's mean-pooled
tokens, the layer chosen on validation, test accuracy reported; each seed draws its
own training clips). Writes one CSV row per (task, representation, step, seed), with
every layer's test accuracy beside the chosen one's, and a
figure: one panel per task (mean +- sd over the seeds, random init and log-mel as flat
lines) and the runs' masked-patch accuracy on validation beside them.

    python lab/gain_curve.py --runs long_runs/ssamba long_runs/ssast \\
        --csv docs/gain_vs_compute.csv --plot docs/gain_vs_compute.png
    python lab/gain_curve.py --table --csv docs/gain_vs_compute.csv          # mean +- sd, gains
    python lab/gain_curve.py --redraw --runs long_runs/ssamba long_runs/ssast # the figure from the CSV
    python lab/gain_curve.py --layers speaker --csv docs/gain_vs_compute.csv # every layer's accuracy
    python lab/gain_curve.py --masked --runs long_runs/ssamba long_runs/ssast  # masked-patch accuracy

Budgets are steps and the seeds are fixed, so the numbers do not depend on the machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

COLUMNS = ["task", "representation", "family", "step", "seed", "test_acc", "layer", "chance", "test_by_layer"]


def snapshots(run: Path) -> dict[int, Path]:
    """Step -> snapshot folder of a long run."""
    return {int(p.name.split("-")[1]): p for p in sorted((run / "snapshots").glob("step-*")) if p.is_dir()}


def masked_accuracy(run: Path) -> list[tuple[int, float]]:
    """(step, masked-patch accuracy on validation) from the run's metrics.csv."""
    with open(run / "metrics.csv", newline="") as handle:
        return [(int(float(r["step"])), float(r["valid_acc"])) for r in csv.DictReader(handle) if r.get("valid_acc")]


def measure(runs: list[Path], seeds: list[int], tasks: tuple[str, ...], scale: str = "default") -> list[dict]:
    import torch

    from ssamba import demo
    from ssamba.corpora import build_suite
    from ssamba.data import compute_stats
    from ssamba.models import load_model, model_from_config
    from ssamba.training.probe import layer_embeddings, pooled_logmel

    settings = demo.MODES[scale]
    suite = build_suite(None, seed=0, scale=settings.scale, progress=False)
    stats = compute_stats(suite.manifest("unlabeled", "train"), max_clips=200)
    rows = []
    for task in tasks:
        data = demo._probe_data(suite, task, settings, stats, seed=0)
        chance = 1 / data["classes"]

        def probe(embed, name, family, step, over_seeds):
            features = demo._features(embed, data)
            for s in over_seeds:
                result = demo._probe(features, data, settings, s)
                rows.append({"task": task, "representation": name, "family": family, "step": step, "seed": s,
                             "test_acc": round(result["test"], 5), "layer": result["layer"], "chance": chance,
                             "test_by_layer": " ".join(f"{a:.4f}" for a in result["test_by_layer"])})

        probe(pooled_logmel, "log-mel", "", "", seeds)
        for run in runs:
            family = json.loads((run / "long_run.json").read_text())["recipe"]["family"]
            kept = snapshots(run)
            if not kept:
                continue
            config = load_model(next(iter(kept.values()))).config
            for s in seeds:  # a fresh random init per seed, probed with that seed's clips
                torch.manual_seed(s)
                model = model_from_config(config).eval()
                probe(lambda spec: layer_embeddings(model, spec), "random init", family, 0, [s])
            for step, path in kept.items():
                model = load_model(path).eval()
                probe(lambda spec: layer_embeddings(model, spec), "pretrained", family, step, seeds)
            print(f"{task}: {family} probed at steps {sorted(kept)}", flush=True)
    return rows


def _mean_sd(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, sd


def draw(rows: list[dict], runs: list[Path], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    families = list(dict.fromkeys(r["family"] for r in rows if r["family"]))
    colours = {"ssamba": "tab:blue", "ssast": "tab:orange", "mambaout": "tab:green"}
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(4.2 * (len(tasks) + 1), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        mine = [r for r in rows if r["task"] == task]
        logmel = _mean_sd([float(r["test_acc"]) for r in mine if r["representation"] == "log-mel"])
        ax.axhline(100 * logmel[0], color="grey", ls="--", label="log-mel")
        for family in families:
            colour = colours.get(family, "k")
            random = _mean_sd([float(r["test_acc"]) for r in mine if r["family"] == family
                               and r["representation"] == "random init"])
            ax.axhline(100 * random[0], color=colour, ls=":", label=f"{family} random init")
            steps = sorted({int(r["step"]) for r in mine if r["family"] == family
                            and r["representation"] == "pretrained"})
            stats = [_mean_sd([float(r["test_acc"]) for r in mine if r["family"] == family
                               and r["representation"] == "pretrained" and int(r["step"]) == s]) for s in steps]
            ax.errorbar([0, *steps], [100 * random[0], *(100 * m for m, _ in stats)],
                        yerr=[100 * random[1], *(100 * sd for _, sd in stats)], color=colour, marker="o",
                        capsize=3, label=f"{family} pretrained")
        ax.axhline(100 * float(mine[0]["chance"]), color="k", ls=(0, (1, 3)), lw=0.8, label="chance")
        seeds = len({r["seed"] for r in mine})
        ax.set_title(f"{task}: linear probe (test; mean +- sd over {seeds} seeds)", fontsize=10)
        ax.set_xlabel("pretraining step (0 = random init)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes[0][-1]
    for run in runs:
        family = json.loads((run / "long_run.json").read_text())["recipe"]["family"]
        curve = masked_accuracy(run)
        if curve:
            ax.plot([s for s, _ in curve], [100 * a for _, a in curve], "o-", color=colours.get(family, "k"),
                    markersize=3, label=family)
    ax.set_title("masked-patch accuracy (validation)")
    ax.set_xlabel("pretraining step")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(rows: list[dict], layers_of: str | None = None) -> str:
    """A Markdown table of a CSV's rows: per task and representation (and step), the mean
    +- sd test accuracy over seeds and the gain over the family's random init; with
    ``layers_of`` (a task), every layer's mean test accuracy instead."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["family"], r["representation"], r["step"]), []).append(r)
    if layers_of:
        depth = max(len(r["test_by_layer"].split()) for r in rows if r["task"] == layers_of and r["family"])
        lines = ["| representation | step | " + " | ".join(f"layer {i}" for i in range(depth)) + " |"]
        lines.append("|" + " --- |" * (lines[0].count("|") - 1))
        for (task, family, name, step), members in groups.items():
            if task != layers_of or not family:
                continue
            per_layer = [_mean_sd([float(m["test_by_layer"].split()[i]) for m in members])[0]
                         for i in range(len(members[0]["test_by_layer"].split()))]
            cells = [f"{100 * a:.1f}" for a in per_layer] + [""] * (depth - len(per_layer))  # shallower models
            lines.append(f"| {family} {name} | {step} | " + " | ".join(cells) + " |")
        return "\n".join(lines)
    lines = ["| task | representation | step | test accuracy (%) | gain over random init |", "| --- | --- | --- | --- | --- |"]
    for (task, family, name, step), members in groups.items():
        mean, sd = _mean_sd([float(m["test_acc"]) for m in members])
        random = groups.get((task, family, "random init", "0"))
        gain = f"{100 * (mean - _mean_sd([float(m['test_acc']) for m in random])[0]):+.1f}" \
            if random and name == "pretrained" else ""
        label = f"{family} {name}".strip()
        lines.append(f"| {task} | {label} | {step} | {100 * mean:.1f} +- {100 * sd:.1f} | {gain} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from ssamba import demo

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", default=[], help="long-run folders (examples/long_pretrain.py)")
    p.add_argument("--seeds", type=int, default=3, help="probe seeds (0, 1, ...)")
    p.add_argument("--tasks", nargs="+", default=list(demo.TASKS), choices=demo.TASKS)
    p.add_argument("--scale", default="default", choices=sorted(demo.MODES), help="the demo mode's probe sizes")
    p.add_argument("--csv", default="docs/gain_vs_compute.csv")
    p.add_argument("--plot", default="docs/gain_vs_compute.png")
    p.add_argument("--table", action="store_true", help="print --csv as a Markdown table (mean +- sd, gains) and stop")
    p.add_argument("--redraw", action="store_true", help="draw --plot from --csv (and the --runs' metrics) and stop")
    p.add_argument("--layers", metavar="TASK", default=None, help="print --csv's per-layer accuracies of TASK and stop")
    p.add_argument("--masked", action="store_true",
                   help="print the --runs' masked-patch accuracy on validation (metrics.csv) as a Markdown table "
                        "and stop")
    args = p.parse_args(argv)
    if args.masked:
        curves = {Path(r).name: dict(masked_accuracy(Path(r))) for r in args.runs}
        steps = sorted({s for c in curves.values() for s in c})
        print("| step | " + " | ".join(curves) + " |")
        print("|" + " --- |" * (len(curves) + 1))
        for step in steps:
            print(f"| {step} | " + " | ".join(f"{100 * c[step]:.1f}" if step in c else "" for c in curves.values())
                  + " |")
        return 0
    if args.redraw or args.table or args.layers:
        with open(args.csv, newline="") as handle:
            rows = list(csv.DictReader(handle))
        if not args.redraw:
            print(summary(rows, args.layers))
            return 0
        draw(rows, [Path(r) for r in args.runs], Path(args.plot))
        print(f"figure in {args.plot}")
        return 0
    runs = [Path(r) for r in args.runs]
    if not runs:
        p.error("give the long runs to probe (--runs), or --table / --layers TASK to read --csv")
    for run in runs:
        if not (run / "long_run.json").is_file():
            p.error(f"{run} is not a long run (no long_run.json)")
    rows = measure(runs, list(range(args.seeds)), tuple(args.tasks), args.scale)
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    draw(rows, runs, Path(args.plot))
    print(f"{len(rows)} probes in {args.csv}, figure in {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
