"""What the linear probe's fit costs, and what a cheaper fit changes in its answers.

The demo's probes (``ssamba.demo``, ``ssamba.training.probe.linear_probe``) fit one
scikit-learn logistic regression per layer, per seed and per representation; that fit
holds most of the demo's probe stage and of ``lab/gain_curve.py``. This rig embeds each
task's clips once (the demo's data and protocol) with the shipped encoders and the
pooled log-mel spectrogram, then probes them with each fit setting given (``--variant``:
``max_iter``, ``tol``, ``dtype``), timing the fits and comparing every answer with the
first variant's: every layer's validation accuracy, the layer chosen on validation, and
the test accuracy the demo would report.

    python lab/probe_cost.py --csv docs/probe_cost.csv --variant max_iter=1000,tol=1e-4,dtype=float64 \\
        --variant max_iter=1000,tol=1e-4,dtype=float32 --variant max_iter=200,tol=1e-3,dtype=float32

A killed run started again with the same ``--csv`` measures only what is missing.

Accuracies depend only on the data and the settings; the seconds are this machine's.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

VARIANT_KEYS = {"max_iter": int, "tol": float, "dtype": str}


def parse_variant(text: str) -> dict:
    """``"max_iter=200,tol=1e-3,dtype=float32"`` -> the options of ``linear_probe``."""
    import torch

    variant = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        if key not in VARIANT_KEYS:
            raise argparse.ArgumentTypeError(f"unknown key {key!r} in {text!r}; valid: {', '.join(VARIANT_KEYS)}")
        try:
            variant[key] = VARIANT_KEYS[key](value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{key}={value!r} is not a {VARIANT_KEYS[key].__name__}") from None
    if variant.get("dtype", "float64") not in ("float32", "float64"):
        raise argparse.ArgumentTypeError(f"dtype must be float32 or float64, got {variant['dtype']!r}")
    variant["dtype"] = getattr(torch, variant.get("dtype", "float64"))
    return variant


def label(variant: dict) -> str:
    return f"max_iter={variant.get('max_iter', 1000)} tol={variant.get('tol', 1e-4):g} " \
           f"{str(variant['dtype']).removeprefix('torch.')}"


def representations(models: list[str]) -> dict:
    """Name -> embed function (spec -> (S, N, D) or (N, D))."""
    from ssamba.models import load_model
    from ssamba.training.probe import layer_embeddings, pooled_logmel

    out = {"log-mel": pooled_logmel}
    for name in models:
        model = load_model(name).eval()
        out[name] = lambda spec, model=model: layer_embeddings(model, spec)
    return out


def read_rows(path: Path | None) -> list[dict]:
    """The rows an earlier (perhaps killed) run appended to ``path``."""
    if path is None or not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [{**row, "seed": int(row["seed"]), "seconds": float(row["seconds"]), "test": float(row["test"]),
                 "layer": int(row["layer"]), "valid_by_layer": json.loads(row["valid_by_layer"])}
                for row in csv.DictReader(handle)]


COLUMNS = ["task", "representation", "seed", "variant", "seconds", "test", "layer", "valid_by_layer"]


def measure(variants: list[dict], tasks: list[str], models: list[str], seeds: list[int], scale: str,
            path: Path | None = None) -> list[dict]:
    """One row per (task, representation, seed, variant), each appended to ``path`` (CSV)
    as it is measured; rows already there are kept, not measured again."""
    from ssamba import demo
    from ssamba.corpora import build_suite
    from ssamba.data import compute_stats

    settings = demo.MODES[scale]
    suite = build_suite(None, seed=0, scale=settings.scale, progress=False)
    stats = compute_stats(suite.manifest("unlabeled", "train"), max_clips=200)
    embed = representations(models)
    rows = read_rows(path)
    done = {(r["task"], r["representation"], r["seed"], r["variant"]) for r in rows}
    for task in tasks:
        data = demo._probe_data(suite, task, settings, stats, seed=0)
        for name, fn in embed.items():
            todo = [(s, v) for s in seeds for v in variants if (task, name, s, label(v)) not in done]
            features = demo._features(fn, data) if todo else None
            for seed, variant in todo:
                started = time.perf_counter()
                result = demo._probe(features, data, settings, seed, **variant)
                row = {"task": task, "representation": name, "seed": seed, "variant": label(variant),
                       "seconds": time.perf_counter() - started, "test": result["test"],
                       "layer": result["layer"], "valid_by_layer": result["valid_by_layer"]}
                rows.append(row)
                _append(path, row)
            print(f"{task}: {name} probed", flush=True)
    return rows


def _append(path: Path | None, row: dict) -> None:
    if path is None:
        return
    new = not path.is_file()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({**row, "valid_by_layer": json.dumps(row["valid_by_layer"])})


def summarise(rows: list[dict], variants: list[dict]) -> list[str]:
    """A Markdown table: per variant, fit seconds and how its answers differ from variant 0's."""
    first = label(variants[0])
    base = {(r["task"], r["representation"], r["seed"]): r for r in rows if r["variant"] == first}
    lines = ["| fit | seconds | x faster | max valid diff (any layer) | same layer chosen | "
             "max reported test diff | mean reported test diff |", "|---|---|---|---|---|---|---|"]
    total0 = sum(r["seconds"] for r in base.values())
    for variant in variants:
        mine = [r for r in rows if r["variant"] == label(variant) and (r["task"], r["representation"], r["seed"]) in base]
        pairs = [(r, base[(r["task"], r["representation"], r["seed"])]) for r in mine]
        if not pairs:
            continue
        seconds = sum(r["seconds"] for r in mine)
        valid = max(abs(a - b) for r, r0 in pairs for a, b in zip(r["valid_by_layer"], r0["valid_by_layer"]))
        same = sum(r["layer"] == r0["layer"] for r, r0 in pairs)
        test = [r["test"] - r0["test"] for r, r0 in pairs]
        lines.append(f"| {label(variant)} | {seconds:.1f} | {total0 / seconds:.2f} | {100 * valid:.2f} pts | "
                     f"{same}/{len(pairs)} | {100 * max(map(abs, test)):.2f} pts | "
                     f"{100 * sum(test) / len(test):+.2f} pts |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", type=parse_variant, action="append", required=True,
                        help="fit settings, e.g. max_iter=200,tol=1e-3,dtype=float32; the first is the reference")
    parser.add_argument("--tasks", nargs="+", default=["kws", "speaker", "sounds"],
                        choices=["kws", "speaker", "sounds"])
    parser.add_argument("--models", nargs="*", default=["ssamba-demo", "ssast-demo"],
                        help="shipped or saved encoders to probe beside the pooled log-mel")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scale", default="default", help="the demo mode whose data and protocol to use")
    parser.add_argument("--csv", type=Path, help="append each measured row here; rows already there are kept")
    args = parser.parse_args(argv)
    from ssamba import demo

    if args.scale not in demo.MODES:
        parser.error(f"--scale must be one of {', '.join(demo.MODES)}")
    rows = measure(args.variant, args.tasks, args.models, args.seeds, args.scale, args.csv)
    print("\n".join(summarise(rows, args.variant)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
