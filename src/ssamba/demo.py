"""``ssamba demo``: the whole system on a laptop, offline, in minutes.

1. Build (or reuse) the offline audio suite (:mod:`ssamba.corpora`): synthesised speech
   and instrument notes, as manifests.
2. Pretrain a CPU-sized SSAMBA and the matching SSAST on the unlabeled pool for the same
   wall-clock budget (masked patch modeling: InfoNCE + MSE).
3. Fine-tune each pretrained encoder, and the same architecture from scratch, on keyword
   spotting, speaker identification and instrument-family classification, each for the
   same budget.
4. Print one table (task x model x pretrained/scratch: test accuracy, wall time) and draw
   the pretraining curves, the accuracy bars, a confusion matrix and a 2-D projection of
   clip embeddings.

Every number printed is measured in the run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASKS = ("kws", "speaker", "sounds")
FAMILIES = ("ssamba", "ssast")


@dataclass
class DemoSettings:
    """Budgets and sizes of one demo mode."""

    scale: str  # corpus scale (ssamba.corpora)
    pretrain_seconds: float  # wall-clock pretraining budget per model
    finetune_seconds: float  # wall-clock budget per fine-tuning run
    batch_size: int = 32  # pretraining
    finetune_batch_size: int = 16
    pretrain_frames: int = 144  # 1.44 s: 72 frame tokens
    num_masked: int = 36  # of 72 tokens
    task_frames: dict[str, int] = field(default_factory=lambda: {"kws": 100, "speaker": 144, "sounds": 144})
    models: dict[str, dict] = field(default_factory=lambda: {
        # CPU-sized and matched: the same width and about the same parameters (~0.7 M).
        # Frame tokens (SSAST's frame variant: 128 mel bins x 2 frames each) for both: on
        # this speech-heavy suite 16 x 16 patches (6 time steps per 1 s word) left keyword
        # spotting at chance within the fine-tuning budget; frames resolve 20 ms.
        "ssamba": {"preset": "ssamba_tiny", "options": {"embed_dim": 96, "depth": 8, "drop_path_rate": 0.0,
                                                        "patch_size": (128, 2), "patch_stride": (128, 2)}},
        "ssast": {"preset": "ssast_tiny_frame", "options": {"embed_dim": 96, "depth": 6, "num_heads": 3}},
    })


MODES = {
    "default": DemoSettings(scale="default", pretrain_seconds=240, finetune_seconds=40),
    "quick": DemoSettings(scale="quick", pretrain_seconds=20, finetune_seconds=6, batch_size=16),
}


def _experiment(task: str, overrides: dict[str, Any]):
    from .training.experiment import load_experiment

    return load_experiment(None, {"task": task, **overrides})


def _pretrain(family: str, settings: DemoSettings, suite, stats, out: Path, seed: int, progress: bool) -> dict:
    from .training.run import pretrain

    model = settings.models[family]
    config = _experiment("pretrain", {
        "model.preset": model["preset"],
        "model.options": {**model["options"], "input_tdim": settings.pretrain_frames},
        "frontend.target_length": settings.pretrain_frames, "frontend.mean": stats[0], "frontend.std": stats[1],
        "objective.num_masked": settings.num_masked, "objective.use_separate_passes": False,
        "optim.lr": 1e-3, "optim.warmup_steps": 50, "optim.schedule": "constant",
        "data.train": str(suite.manifest("unlabeled", "train")),
        "data.valid": str(suite.manifest("unlabeled", "validation")), "data.num_workers": 0,
        "run.out_dir": str(out), "run.batch_size": settings.batch_size, "run.epochs": 1000,
        "run.steps_per_epoch": 100, "run.max_seconds": settings.pretrain_seconds, "run.seed": seed,
        "run.save_every": 100000, "run.progress": progress,
    })
    started = time.perf_counter()
    summary = pretrain(config)
    summary["seconds"] = time.perf_counter() - started
    return summary


def _finetune(family: str, task: str, init: str | None, settings: DemoSettings, suite, stats, out: Path,
              seed: int, progress: bool) -> dict:
    from .training.run import finetune

    model = settings.models[family]
    frames = settings.task_frames[task]
    config = _experiment("finetune", {
        "model.preset": model["preset"],
        "model.options": {**model["options"], "input_tdim": frames},
        "model.init_from": init or "",
        "frontend.target_length": frames, "frontend.mean": stats[0], "frontend.std": stats[1],
        "data.train": str(suite.manifest(task, "train")), "data.valid": str(suite.manifest(task, "validation")),
        "data.test": str(suite.manifest(task, "test")), "data.label_csv": str(suite.label_csv(task)),
        # No SpecAugment: at these budgets (1-2 epochs) it costs more than it regularises;
        # with freqm = timem = 24 keyword spotting stayed near chance for both inits.
        "data.freqm": 0, "data.timem": 0, "data.num_workers": 0,
        "finetune.loss": "ce", "finetune.metric": "acc",
        "optim.optimizer": "adam", "optim.lr": 1e-3, "optim.weight_decay": 5e-7, "optim.warmup_steps": 20,
        "optim.schedule": "constant",
        "run.out_dir": str(out), "run.batch_size": settings.finetune_batch_size, "run.epochs": 1000,
        "run.max_seconds": settings.finetune_seconds, "run.seed": seed, "run.save_every": 100000,
        "run.progress": progress,
    })
    started = time.perf_counter()
    summary = finetune(config)
    summary["seconds"] = time.perf_counter() - started
    return summary


def format_table(rows: list[dict]) -> str:
    """The demo's results table (test accuracy in %, wall time per fine-tuning run)."""
    lines = [f"{'task':<9} {'model':<7} {'pretrained':>10} {'scratch':>8} {'gain':>6}   time (pre / scratch)",
             "-" * 70]
    for task in TASKS:
        for family in FAMILIES:
            pre = next(r for r in rows if r["task"] == task and r["model"] == family and r["init"] == "pretrained")
            scr = next(r for r in rows if r["task"] == task and r["model"] == family and r["init"] == "scratch")
            lines.append(f"{task:<9} {family:<7} {100 * pre['acc']:>9.1f}% {100 * scr['acc']:>7.1f}% "
                         f"{100 * (pre['acc'] - scr['acc']):>+6.1f}   {pre['seconds']:.0f} s / {scr['seconds']:.0f} s")
    return "\n".join(lines)


def run_demo(out_dir: str | Path = "demo_out", quick: bool = False, seed: int = 0,
             cache_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Run the demo; returns (and writes to ``out_dir/results.json``) everything it printed."""
    from .corpora import build_suite
    from .data import compute_stats

    settings = MODES["quick" if quick else "default"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    print(f"[1/4] offline audio suite ({settings.scale} scale)")
    root = Path(cache_dir) / f"{settings.scale}-seed{seed}" if cache_dir else None  # one suite per folder
    suite = build_suite(root, seed=seed, scale=settings.scale, progress=progress)
    print(suite.table())
    stats = compute_stats(suite.manifest("unlabeled", "train"), max_clips=200)
    print(f"log-mel statistics of the unlabeled pool: mean {stats[0]:.3f}, std {stats[1]:.3f}")

    print(f"[2/4] pretraining SSAMBA and SSAST, {settings.pretrain_seconds:.0f} s each")
    pretrained = {f: _pretrain(f, settings, suite, stats, out / f"pretrain_{f}", seed, progress) for f in FAMILIES}

    print(f"[3/4] fine-tuning on {', '.join(TASKS)}, {settings.finetune_seconds:.0f} s per run")
    rows = []
    for task in TASKS:
        for family in FAMILIES:
            for init in ("pretrained", "scratch"):
                source = str(out / f"pretrain_{family}") if init == "pretrained" else None
                summary = _finetune(family, task, source, settings, suite, stats,
                                    out / f"{task}_{family}_{init}", seed, progress)
                rows.append({"task": task, "model": family, "init": init, "acc": summary["test"]["acc"],
                             "seconds": summary["seconds"], "steps": summary["steps"],
                             "run": str(out / f"{task}_{family}_{init}")})

    print("[4/4] results (test accuracy; test voices / words / programs unseen in training)")
    table = format_table(rows)
    print(table)
    pre_summary = {f: {"steps": s["steps"], "seconds": s["seconds"],
                       "valid": {k: v for k, v in s["history"][-1].items() if k.startswith("valid_")}
                       if s.get("history") else {}} for f, s in pretrained.items()}
    for family, info in pre_summary.items():
        valid = info["valid"]
        print(f"pretraining {family}: {info['steps']} steps in {info['seconds']:.0f} s; masked-patch accuracy "
              f"{100 * valid.get('valid_acc', float('nan')):.1f}% (chance {100 / settings.num_masked:.1f}%)")
    plots = draw_plots(out, rows, suite)
    results = {"settings": settings.__dict__, "suite": suite.stats(), "pretraining": pre_summary,
               "finetuning": rows, "table": table, "plots": plots,
               "total_seconds": time.perf_counter() - started}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"plots and results in {out} ({results['total_seconds'] / 60:.1f} min in all)")
    return results


def draw_plots(out: Path, rows: list[dict], suite) -> list[str]:
    """Pretraining curves, accuracy bars, a confusion matrix and an embedding projection."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    paths = []
    # pretraining curves
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for family in FAMILIES:
        with open(out / f"pretrain_{family}" / "metrics.csv") as handle:
            history = list(csv.DictReader(handle))
        for ax, key in zip(axes, ("train_loss", "valid_acc")):
            points = [(float(r["step"]), float(r[key])) for r in history if r.get(key)]
            if points:
                ax.plot(*zip(*points), "-" if key.startswith("train") else "o-", label=family.upper(), markersize=3)
    axes[0].set_title("pretraining loss (InfoNCE + 10 x MSE)")
    axes[1].set_title("masked-patch accuracy (validation)")
    for ax in axes:
        ax.set_xlabel("optimiser step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "pretraining.png", dpi=110)
    plt.close(fig)
    paths.append(str(out / "pretraining.png"))

    # accuracy bars
    fig, ax = plt.subplots(figsize=(8, 3.8))
    labels = [(f, i) for f in FAMILIES for i in ("pretrained", "scratch")]
    width = 0.2
    for k, (family, init) in enumerate(labels):
        values = [100 * next(r["acc"] for r in rows if r["task"] == t and r["model"] == family and r["init"] == init)
                  for t in TASKS]
        ax.bar(np.arange(len(TASKS)) + (k - 1.5) * width, values, width, label=f"{family.upper()} {init}")
    ax.set_xticks(np.arange(len(TASKS)), TASKS)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=110)
    plt.close(fig)
    paths.append(str(out / "accuracy.png"))

    paths += _confusion_and_projection(out, rows, suite)
    return paths


def _confusion_and_projection(out: Path, rows: list[dict], suite) -> list[str]:
    """Confusion matrix of pretrained SSAMBA on kws; PCA of its pretrained encoder's
    scene embeddings of the speaker test clips, coloured by speaker."""
    import matplotlib.pyplot as plt
    import torch

    from .data import ClipDataset, ClipDatasetConfig, collate_clips, read_label_csv
    from .models import load_model

    paths = []
    run = next(r["run"] for r in rows if r["task"] == "kws" and r["model"] == "ssamba" and r["init"] == "pretrained")
    model = load_model(run).eval()
    labels = read_label_csv(suite.label_csv("kws"))
    data = ClipDataset(suite.manifest("kws", "test"), ClipDatasetConfig(frontend=model.frontend_config), labels)
    batch = collate_clips([data[i] for i in range(len(data))])
    with torch.no_grad():
        predicted = torch.cat([model(batch["spec"][i:i + 64]).argmax(1) for i in range(0, len(data), 64)])
    truth = batch["target"].argmax(1)
    n = labels.num_classes
    matrix = torch.zeros(n, n)
    matrix.index_put_((truth, predicted), torch.ones_like(truth, dtype=torch.float), accumulate=True)
    matrix = matrix / matrix.sum(1, keepdim=True).clamp_min(1)
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(matrix.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels.names, rotation=90, fontsize=6)
    ax.set_yticks(range(n), labels.names, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("spoken")
    ax.set_title(f"keyword spotting, pretrained SSAMBA: {100 * (predicted == truth).float().mean():.1f}% on unseen voices")
    fig.tight_layout()
    fig.savefig(out / "confusion_kws.png", dpi=110)
    plt.close(fig)
    paths.append(str(out / "confusion_kws.png"))

    encoder = load_model(out / "pretrain_ssamba").eval()
    speakers = read_label_csv(suite.label_csv("speaker"))
    data = ClipDataset(suite.manifest("speaker", "test"), ClipDatasetConfig(frontend=encoder.frontend_config),
                       speakers)
    batch = collate_clips([data[i] for i in range(len(data))])
    with torch.no_grad():
        tokens = torch.cat([encoder.forward_features(batch["spec"][i:i + 64]) for i in range(0, len(data), 64)])
    embeddings = tokens[:, encoder.num_prefix_tokens:].mean(1)
    centred = embeddings - embeddings.mean(0)
    _, _, v = torch.pca_lowrank(centred, q=2, center=False)
    xy = (centred @ v[:, :2]).numpy()
    who = batch["target"].argmax(1).numpy()
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(xy[:, 0], xy[:, 1], c=who, cmap="tab20", s=10)
    ax.set_title("pretrained SSAMBA (no labels seen): speaker test clips, PCA")
    fig.tight_layout()
    fig.savefig(out / "embeddings_speaker.png", dpi=110)
    plt.close(fig)
    paths.append(str(out / "embeddings_speaker.png"))
    return paths


def cmd_demo(args) -> int:
    """Offline demo: build the synthetic audio suite, pretrain SSAMBA and SSAST, fine-tune
    each (and each from scratch) on keyword spotting, speaker ID and sounds, compare."""
    run_demo(args.out, quick=args.quick, seed=args.seed, cache_dir=args.cache, progress=not args.no_progress)
    return 0


def add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help=cmd_demo.__doc__, description=cmd_demo.__doc__ + (
        " The default run takes about 20 minutes on a 2-core CPU; --quick about 3."))
    p.add_argument("--quick", action="store_true", help="a smaller suite and short budgets (a smoke run)")
    p.add_argument("--out", default="demo_out", help="folder for the runs, plots and results.json")
    p.add_argument("--cache", default=None, help="where the audio suite is cached (default: ~/.cache/ssamba/corpora)")
    p.add_argument("--seed", type=int, default=0, help="seed of the suite and of every run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)
