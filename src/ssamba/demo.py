"""``ssamba demo``: does pretraining work? The whole system on a laptop, offline.

1. Build (or reuse) the offline audio suite (:mod:`ssamba.corpora`): synthesised speech
   and instrument notes, as manifests.
2. Pretrain a CPU-sized SSAMBA and the matching SSAST on the unlabeled pool (the synthetic
   clips and the real recordings found here, :mod:`ssamba.corpora.recordings`) for the
   same number of optimiser steps at the same batch (the paper's "equal compute"), with
   masked patch modeling (InfoNCE + MSE); validate and keep a snapshot at equal periods.
   Beside them, the same architectures pretrained far longer and shipped with the
   package (``ssamba-demo``, ``ssast-demo``: :mod:`ssamba.models.shipped`), where present.
3. Linear probes: for keyword spotting, speaker identification and instrument families,
   a logistic regression on frozen, pooled embeddings of every layer (the layer chosen
   on validation) of the pretrained encoder, of the same architecture at random init,
   and of the pooled log-mel spectrogram; also of the pretraining snapshots, so the
   gain can be followed against pretraining steps.
4. Low-label fine-tuning: each pretrained encoder and the same architecture from scratch,
   fine-tuned on a few labelled clips per class for a fixed number of steps.
5. Probes and fine-tuning run over several seeds (the seed draws the probe's training
   clips, the random init, the labelled subset and the fine-tuning run); tables give
   mean +- sd and plots show error bars and chance.

Budgets are optimiser steps, never seconds, so a seed gives the same numbers on any
machine (up to floating-point nondeterminism); wall time is measured and printed beside
them. Every number printed is measured in the run.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .argtypes import at_least

TASKS = ("kws", "speaker", "sounds")
FAMILIES = ("ssamba", "ssast")  # compared by default
OPTIONAL_FAMILIES = ("mambaout",)  # on request (--families)


@dataclass
class DemoSettings:
    """Budgets (in optimiser steps) and sizes of one demo mode."""

    scale: str  # corpus scale (ssamba.corpora)
    pretrain_steps: int  # optimiser steps of pretraining, the same for both families
    finetune_steps: int  # optimiser steps of each low-label fine-tuning run
    labels_per_class: int = 16  # labelled training clips per class for low-label fine-tuning
    seeds: int = 3  # probes and fine-tuning repeated over this many seeds
    periods: int = 4  # pretraining is validated and snapshotted at the end of each of these
    probed_periods: tuple[int, ...] = (1, 2)  # snapshots probed besides the final one (gain vs steps)
    probe_pool: int = 1200  # training clips embedded per task; each seed's probe fits on a sample of
    probe_train_clips: int = 800  # ... this many of them
    probe_valid_clips: int = 300  # validation clips (choose the layer)
    batch_size: int = 32  # pretraining
    finetune_batch_size: int = 16
    pretrain_lr: float = 1e-3
    finetune_lr: float = 1e-3
    pretrain_frames: int = 144  # 1.44 s: 72 frame tokens
    num_masked: int = 36  # of 72 tokens
    families: tuple[str, ...] = FAMILIES  # the encoders compared (keys of models)
    tasks: tuple[str, ...] = TASKS  # the probed and fine-tuned tasks
    task_frames: dict[str, int] = field(default_factory=lambda: {"kws": 100, "speaker": 144, "sounds": 144})
    models: dict[str, dict] = field(default_factory=lambda: {
        # CPU-sized and matched: the same width and about the same parameters (~0.7 M).
        # Frame tokens (SSAST's frame variant: 128 mel bins x 2 frames each) for both: on
        # this speech-heavy suite 16 x 16 patches (6 time steps per 1 s word) left keyword
        # spotting at chance; frames resolve 20 ms.
        "ssamba": {"preset": "ssamba_tiny", "options": {"embed_dim": 96, "depth": 8, "drop_path_rate": 0.0,
                                                        "patch_size": (128, 2), "patch_stride": (128, 2)}},
        "ssast": {"preset": "ssast_tiny_frame", "options": {"embed_dim": 96, "depth": 6, "num_heads": 3}},
        # SSAMBA with the SSM removed from every mixer (the MambaOut ablation): what the
        # scan adds over a gated CNN of the same width and depth
        "mambaout": {"preset": "mambaout_tiny", "options": {"embed_dim": 96, "depth": 8, "drop_path_rate": 0.0,
                                                            "patch_size": (128, 2), "patch_stride": (128, 2)}},
    })

    @property
    def period(self) -> int:
        """Pretraining steps between validations and snapshots."""
        return max(1, self.pretrain_steps // self.periods)


MODES = {
    "default": DemoSettings(scale="default", pretrain_steps=600, finetune_steps=100),
    "quick": DemoSettings(scale="quick", pretrain_steps=24, finetune_steps=12, labels_per_class=4, batch_size=16,
                          periods=2, probed_periods=(1,), probe_pool=120, probe_train_clips=80,
                          probe_valid_clips=40),
    "full": DemoSettings(scale="default", pretrain_steps=3000, finetune_steps=200, labels_per_class=20, periods=6,
                         probed_periods=(1, 2, 4)),
}


def _experiment(task: str, overrides: dict[str, Any]):
    from .training.experiment import load_experiment

    return load_experiment(None, {"task": task, **overrides})


def _timed(function, config) -> dict:
    started = time.perf_counter()
    summary = function(config)
    summary["seconds"] = time.perf_counter() - started
    return summary


# -- pretraining ------------------------------------------------------------------------

@dataclass
class Pool:
    """The unlabeled pretraining pool: manifests of its training and validation clips."""

    name: str  # "synthetic" or "synthetic+recorded"
    train: Path
    valid: Path
    recorded: Any = None  # the ssamba.corpora.recordings.RecordedPool it holds, if any


def pretraining_pool(suite, settings: DemoSettings, out: Path, cache_dir: str | Path | None = None,
                     progress: bool = False, seed: int | None = None) -> Pool:
    """The suite's synthetic pool joined with the real recordings found here (Debian
    packages that ``scripts/setup.sh`` fetches; :mod:`ssamba.corpora.recordings`), cut at
    ``settings.scale``; the synthetic pool alone, said in one line, where none is found.
    The joined manifests are written to ``out/manifests``."""
    from .corpora.recordings import build_recordings, default_root
    from .data import read_manifest, write_manifest

    seed = suite.seed if seed is None else seed
    root = Path(cache_dir) / f"recorded-{settings.scale}-seed{seed}" if cache_dir else default_root(settings.scale, seed)
    recorded = build_recordings(root, seed=seed, scale=settings.scale, progress=progress)
    synthetic = {"train": suite.manifest("unlabeled", "train"), "validation": suite.manifest("unlabeled", "validation")}
    if recorded is None:
        print("no real recordings found (scripts/setup.sh fetches them from Debian's packages): pretraining on "
              "the synthetic pool alone", flush=True)
        return Pool("synthetic", synthetic["train"], synthetic["validation"])
    joined = {}
    for split, path in synthetic.items():
        joined[split] = out / "manifests" / f"pool-{split}.json"
        joined[split].parent.mkdir(parents=True, exist_ok=True)
        write_manifest(read_manifest(path) + read_manifest(recorded.manifests[split]), joined[split])
    return Pool("synthetic+recorded", joined["train"], joined["validation"], recorded)


def _pretrain(family: str, settings: DemoSettings, suite, stats, out: Path, seed: int, progress: bool,
              overrides: dict[str, Any] | None = None, pool: Pool | None = None, resume: bool = False) -> dict:
    """Pretrain ``family`` as the demo does, on ``pool`` (default: the suite's synthetic
    pool); ``overrides`` (``section.key``) change the recipe; ``resume`` continues from
    the newest checkpoint in ``out``."""
    from .training.run import pretrain

    model = settings.models[family]
    train = pool.train if pool else suite.manifest("unlabeled", "train")
    valid = pool.valid if pool else suite.manifest("unlabeled", "validation")
    config = _experiment("pretrain", {
        "model.preset": model["preset"],
        "model.options": {**model["options"], "input_tdim": settings.pretrain_frames},
        "frontend.target_length": settings.pretrain_frames, "frontend.mean": stats[0], "frontend.std": stats[1],
        "objective.num_masked": settings.num_masked, "objective.use_separate_passes": False,
        "optim.lr": settings.pretrain_lr, "optim.warmup_steps": min(50, settings.pretrain_steps // 4),
        "optim.schedule": "constant",
        "data.train": str(train), "data.valid": str(valid), "data.num_workers": 0,
        "run.out_dir": str(out), "run.batch_size": settings.batch_size, "run.epochs": settings.periods,
        "run.steps_per_epoch": settings.period, "run.max_steps": settings.pretrain_steps, "run.seed": seed,
        "run.save_every": 10 ** 9, "run.keep_checkpoints": settings.periods + 1, "run.progress": progress,
        **(overrides or {}),
    })
    return _timed(lambda c: pretrain(c, resume=resume, overwrite=not resume), config)  # the demo owns its folders


def long_pretrained(settings: DemoSettings) -> dict[str, dict]:
    """The shipped long-pretrained encoder of each family (``<family>-demo``,
    :mod:`ssamba.models.shipped`) that has the demo's architecture: ``family ->
    {"name", "path", "steps", "encoder"}``; the others are said in one line each."""
    from .models import get_config, load_model
    from .models.shipped import shipped_dir

    found = {}
    for family in settings.families:
        name = f"{family}-demo"
        path = shipped_dir(name)
        if path is None:
            print(f"no long-pretrained {_label(family)} is shipped ({name}): its 'long' rows are left out", flush=True)
            continue
        model = settings.models[family]
        wanted = get_config(model["preset"], **{**model["options"], "input_tdim": settings.pretrain_frames})
        encoder = load_model(path)
        config = encoder.config
        if type(config) is not type(wanted) or config != wanted:
            print(f"the shipped {name} is not the demo's {_label(family)} architecture: its 'long' rows are left out",
                  flush=True)
            continue
        steps = json.loads((path / "provenance.json").read_text())["steps"]
        found[family] = {"name": name, "path": path, "steps": steps, "encoder": encoder.eval()}
    return found


def _snapshots(run: Path, settings: DemoSettings) -> dict[int, Path]:
    """Pretraining step -> checkpoint folder, for the probed periods."""
    wanted = {k * settings.period for k in settings.probed_periods if k * settings.period < settings.pretrain_steps}
    found = {int(p.name.split("-")[1]): p for p in (run / "checkpoints").glob("step-*")}
    return {step: found[step] for step in sorted(wanted) if step in found}


# -- data for the probes ------------------------------------------------------------------

def _probe_data(suite, task: str, settings: DemoSettings, stats, seed: int) -> dict:
    """The clips every probe of ``task`` sees: a pool of training clips, validation, test;
    each split as ``(spec (N, T, F), class index (N,))``."""
    import torch

    from .data import ClipDataset, ClipDatasetConfig, collate_clips, read_label_csv
    from .frontend import FrontendConfig

    labels = read_label_csv(suite.label_csv(task))
    frontend = FrontendConfig(target_length=settings.task_frames[task], mean=stats[0], std=stats[1])
    out = {"classes": labels.num_classes}
    for split, count in (("train", settings.probe_pool), ("validation", settings.probe_valid_clips),
                         ("test", None)):
        data = ClipDataset(suite.manifest(task, split), ClipDatasetConfig(frontend=frontend), labels)
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
        picked = order[:count].sort().values if count else torch.arange(len(data))
        batch = collate_clips([data[int(i)] for i in picked])
        out[split] = (batch["spec"], batch["target"].argmax(1))
    return out


def _features(embed, data: dict) -> dict:
    """``embed`` (spec -> (S, N, D) or (N, D)) applied once to each split of ``data``."""
    out = {}
    for split in ("train", "validation", "test"):
        x = embed(data[split][0])
        out[split] = x if x.dim() == 3 else x.unsqueeze(0)
    return out


def _probe(features: dict, data: dict, settings: DemoSettings, seed: int, **fit) -> dict:
    """Probe one representation (:func:`_features`) with one seed's sample of the training
    pool; ``fit``: options of :func:`ssamba.training.probe.linear_probe` (its defaults)."""
    import torch

    from .training.probe import probe_layers

    pool_y = data["train"][1]
    take = torch.randperm(len(pool_y), generator=torch.Generator().manual_seed(1000 + seed))
    take = take[:settings.probe_train_clips]
    result = probe_layers(features["train"][:, take], pool_y[take], features["validation"], data["validation"][1],
                          features["test"], data["test"][1], data["classes"], **fit)
    return asdict(result)


def _run_probes(suite, settings: DemoSettings, stats, out: Path, seed: int, seeds: list[int],
                long: dict[str, dict] | None = None) -> tuple[dict, dict]:
    """Probe results ``[task][representation] -> list over seeds`` and the gain-vs-steps
    curve ``[task][family] -> [(step, test accuracy)]`` (first seed); ``long``
    (:func:`long_pretrained`) adds each shipped encoder's row and its point at the end
    of the curve."""
    import torch

    from .models import load_model, model_from_config
    from .training.checkpoint import load_checkpoint
    from .training.probe import layer_embeddings, pooled_logmel

    long = long or {}
    encoders = {f: load_model(out / f"pretrain_{f}" / "final").eval() for f in settings.families}
    long_encoders = {f: info["encoder"] for f, info in long.items()}
    snapshots = {f: {step: load_checkpoint(path)[0].eval()
                     for step, path in _snapshots(out / f"pretrain_{f}", settings).items()}
                 for f in settings.families}
    results: dict = {}
    curve: dict = {}
    for task in settings.tasks:
        data = _probe_data(suite, task, settings, stats, seed)

        def probes_of(model, over_seeds):
            features = _features(lambda spec: layer_embeddings(model, spec), data)
            return [_probe(features, data, settings, s) for s in over_seeds]

        logmel = _features(pooled_logmel, data)
        row = {"log-mel": [_probe(logmel, data, settings, s) for s in seeds]}
        curve[task] = {}
        for family in settings.families:
            row[f"{family} pretrained"] = probes_of(encoders[family], seeds)
            random_runs = []
            for s in seeds:  # a fresh random init per seed, probed with that seed's clips
                torch.manual_seed(s)
                random_runs += probes_of(model_from_config(encoders[family].config).eval(), [s])
            row[f"{family} random init"] = random_runs
            points = [(0, random_runs[0]["test"])]
            points += [(step, probes_of(model, seeds[:1])[0]["test"]) for step, model in snapshots[family].items()]
            points.append((settings.pretrain_steps, row[f"{family} pretrained"][0]["test"]))
            if family in long_encoders:
                row[f"{family} long"] = probes_of(long_encoders[family], seeds)
                points.append((long[family]["steps"], row[f"{family} long"][0]["test"]))
            curve[task][family] = points
        results[task] = {"chance": 1 / data["classes"], **row}
    return results, curve


# -- low-label fine-tuning ------------------------------------------------------------------

def _few_labels_manifest(suite, task: str, per_class: int, seed: int, out: Path) -> Path:
    """A manifest of ``per_class`` training clips of each class, drawn with ``seed``."""
    import random

    from .data import read_manifest, write_manifest

    entries = read_manifest(suite.manifest(task, "train"))
    by_label: dict[str, list] = {}
    for entry in entries:
        by_label.setdefault(entry.labels[0], []).append(entry)
    rng = random.Random(seed)
    chosen = [e for label in sorted(by_label) for e in rng.sample(by_label[label], min(per_class, len(by_label[label])))]
    path = out / "manifests" / f"{task}-{per_class}-per-class-seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(chosen, path)
    return path


def _finetune(family: str, task: str, init: Path | None, manifest: Path, settings: DemoSettings, suite, stats,
              out: Path, seed: int, progress: bool) -> dict:
    from .training.run import finetune

    model = settings.models[family]
    frames = settings.task_frames[task]
    config = _experiment("finetune", {
        "model.preset": model["preset"],
        "model.options": {**model["options"], "input_tdim": frames},
        "model.init_from": str(init) if init else "",
        "frontend.target_length": frames, "frontend.mean": stats[0], "frontend.std": stats[1],
        "data.train": str(manifest), "data.test": str(suite.manifest(task, "test")),
        "data.label_csv": str(suite.label_csv(task)),
        # No SpecAugment: at these budgets it costs more than it regularises (with
        # freqm = timem = 24 keyword spotting stayed near chance for both inits).
        "data.freqm": 0, "data.timem": 0, "data.num_workers": 0,
        "finetune.loss": "ce", "finetune.metric": "acc",
        "optim.optimizer": "adam", "optim.lr": settings.finetune_lr, "optim.weight_decay": 5e-7,
        "optim.warmup_steps": min(20, settings.finetune_steps // 4), "optim.schedule": "constant",
        "run.out_dir": str(out), "run.batch_size": settings.finetune_batch_size, "run.epochs": 1,
        "run.steps_per_epoch": settings.finetune_steps, "run.max_steps": settings.finetune_steps,
        "run.seed": seed, "run.save_every": 10 ** 9, "run.progress": progress,
        "run.plot": False,  # 12 to 200 steps each, dozens of runs: the demo's own plots summarise them
    })
    return _timed(lambda c: finetune(c, overwrite=True), config)


# -- report ---------------------------------------------------------------------------

def _mean_sd(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, sd


def _cell(values: list[float]) -> str:
    mean, sd = _mean_sd(values)
    return f"{100 * mean:5.1f} +- {100 * sd:4.1f}"


def _gain(better: list[float], base: list[float]) -> str:
    return f"{100 * (_mean_sd(better)[0] - _mean_sd(base)[0]):+5.1f}"


def format_probe_table(probes: dict, families: tuple[str, ...] = FAMILIES) -> str:
    """Probe test accuracy (%), mean +- sd over seeds: per family random init, the demo's
    fresh pretraining and (where shipped) the long-pretrained encoder, each pretrained
    row with its gain over random init."""
    tasks = list(probes)
    with_long = [f for f in families if all(f"{f} long" in probes[t] for t in tasks)]
    head = f"{'task':<8} {'chance':>6}  {'log-mel':>13}"
    for family in families:
        head += f"  {family + ' random':>13}  {family + ' fresh':>13}  {'gain':>5}"
        if family in with_long:
            head += f"  {family + ' long':>13}  {'gain':>5}"
    lines = [head, "-" * len(head)]
    for task, row in probes.items():
        line = f"{task:<8} {100 * row['chance']:5.1f}%  {_cell([r['test'] for r in row['log-mel']])}"
        for family in families:
            rand = [r["test"] for r in row[f"{family} random init"]]
            fresh = [r["test"] for r in row[f"{family} pretrained"]]
            line += f"  {_cell(rand)}  {_cell(fresh)}  {_gain(fresh, rand)}"
            if family in with_long:
                long = [r["test"] for r in row[f"{family} long"]]
                line += f"  {_cell(long)}  {_gain(long, rand)}"
        lines.append(line)
    return "\n".join(lines)


def format_finetune_table(rows: list[dict], probes: dict, families: tuple[str, ...] = FAMILIES) -> str:
    """Low-label fine-tuning test accuracy (%), mean +- sd over seeds: from scratch, from
    the demo's fresh pretraining and (where shipped) from the long-pretrained encoder,
    with the gains over scratch."""
    with_long = [f for f in families if any(r["model"] == f and r["init"] == "long" for r in rows)]
    head = f"{'task':<8} {'chance':>6}"
    for family in families:
        head += f"  {family + ' scratch':>14}  {family + ' fresh':>13}  {'gain':>5}"
        if family in with_long:
            head += f"  {family + ' long':>13}  {'gain':>5}"
    lines = [head, "-" * len(head)]
    for task in probes:
        line = f"{task:<8} {100 * probes[task]['chance']:5.1f}%"
        for family in families:
            scr, fresh, long = ([r["acc"] for r in rows if r["task"] == task and r["model"] == family
                                 and r["init"] == init] for init in ("scratch", "pretrained", "long"))
            line += f"  {_cell(scr):>14}  {_cell(fresh)}  {_gain(fresh, scr)}"
            if family in with_long:
                line += f"  {_cell(long)}  {_gain(long, scr)}"
        lines.append(line)
    return "\n".join(lines)


def _clean_checkpoints(run: Path, keep: bool) -> None:
    if not keep:
        shutil.rmtree(run / "checkpoints", ignore_errors=True)


def _pretraining_summary(family: str, summary: dict, out: Path, settings: DemoSettings) -> dict:
    """A fresh pretraining run in the results: steps, seconds and its masked-patch
    accuracy on validation, last and by step (printed as well)."""
    with open(out / f"pretrain_{family}" / "metrics.csv") as handle:
        history = [r for r in csv.DictReader(handle) if r.get("valid_acc")]
    curve = [(int(float(r["step"])), float(r["valid_acc"])) for r in history]
    found = {"steps": summary["steps"], "seconds": summary["seconds"],
             "valid_acc": curve[-1][1] if curve else float("nan"), "valid_acc_by_step": curve}
    print(f"pretraining {family}: {summary['steps']} steps in {summary['seconds']:.0f} s; masked-patch "
          f"accuracy (official definition, validation) {100 * found['valid_acc']:.1f}% "
          f"(chance {100 / settings.num_masked:.1f}%)")
    return found


def _low_label_runs(suite, settings: DemoSettings, stats, out: Path, seeds: list[int], long: dict,
                    progress: bool, keep_checkpoints: bool) -> list[dict]:
    """Stage 4: each task, seed, family and initialisation (fresh pretraining, random,
    the shipped long-pretrained encoder) fine-tuned on a few labels; one row each."""
    rows = []
    for task in settings.tasks:
        for s in seeds:
            manifest = _few_labels_manifest(suite, task, settings.labels_per_class, s, out)
            for family in settings.families:
                for init in ("pretrained", "scratch") + (("long",) if family in long else ()):
                    name = f"lowlabel/{task}_{family}_{init}_seed{s}"
                    source = {"pretrained": out / f"pretrain_{family}", "scratch": None,
                              "long": long.get(family, {}).get("path")}[init]
                    summary = _finetune(family, task, source, manifest, settings, suite, stats, out / name, s,
                                        progress)
                    _clean_checkpoints(out / name, keep_checkpoints)
                    rows.append({"task": task, "model": family, "init": init, "seed": s,
                                 "acc": summary["test"]["acc"], "steps": summary["steps"],
                                 "seconds": summary["seconds"], "run": name})
    return rows


def _print_results(settings: DemoSettings, seeds: list[int], probes: dict, rows: list[dict],
                   pre_summary: dict) -> tuple[str, str]:
    """Stage 5's tables and wall times, printed; returns the two tables."""
    probe_table = format_probe_table(probes, settings.families)
    finetune_table = format_finetune_table(rows, probes, settings.families)
    print(f"linear probes (test accuracy %, mean +- sd over {len(seeds)} seeds; layer chosen on validation; "
          f"{settings.probe_train_clips} training clips)")
    print(probe_table)
    print(f"low-label fine-tuning (test accuracy %, mean +- sd over {len(seeds)} seeds; "
          f"{settings.labels_per_class} labels per class, {settings.finetune_steps} steps at batch "
          f"{settings.finetune_batch_size})")
    print(finetune_table)
    for family in settings.families:
        times = [r["seconds"] for r in rows if r["model"] == family]
        print(f"wall time {family}: pretraining {pre_summary[family]['seconds']:.0f} s, fine-tuning "
              f"{sum(times):.0f} s over {len(times)} runs")
    return probe_table, finetune_table


def run_demo(out_dir: str | Path = "demo_out", mode: str = "default", seed: int = 0,
             cache_dir: str | Path | None = None, progress: bool = True, keep_checkpoints: bool = False,
             families: tuple[str, ...] = FAMILIES, tasks: tuple[str, ...] = TASKS,
             pretrain_steps: int | None = None) -> dict:
    """Run the demo; returns (and writes to ``out_dir/results.json``) everything it printed.

    ``pretrain_steps`` replaces the mode's pretraining budget: with the shipped encoders'
    steps (``ssamba models`` lists them) the fresh pretraining reproduces them, since the
    recipe's schedule is constant after warm-up.

    ``families`` (of ``FAMILIES + OPTIONAL_FAMILIES``) and ``tasks`` (of ``TASKS``) choose
    what is compared; each family's and task's numbers do not depend on the others run
    beside them. Wall times are the keys named ``seconds``; everything else is a function
    of the seed, the mode and those choices.
    """
    from dataclasses import replace

    from .corpora import build_suite
    from .data import compute_stats

    if mode not in MODES:
        raise ValueError(f"unknown demo mode {mode!r}; choose one of {', '.join(MODES)}")
    settings = replace(MODES[mode], families=_checked_choice(families, FAMILIES + OPTIONAL_FAMILIES),
                       tasks=_checked_choice(tasks, TASKS))
    if pretrain_steps is not None:
        settings = replace(settings, pretrain_steps=pretrain_steps)
    seeds = [seed + k for k in range(settings.seeds)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    seconds: dict[str, float] = {}

    print(f"[1/5] offline audio suite ({settings.scale} scale)", flush=True)
    root = Path(cache_dir) / f"{settings.scale}-seed{seed}" if cache_dir else None  # one suite per folder
    suite = build_suite(root, seed=seed, scale=settings.scale, progress=progress)
    print(suite.table())
    stats = compute_stats(suite.manifest("unlabeled", "train"), max_clips=200)
    print(f"log-mel statistics of the unlabeled pool: mean {stats[0]:.3f}, std {stats[1]:.3f}")
    pool = pretraining_pool(suite, settings, out, cache_dir, progress)
    if pool.recorded is not None:
        print(f"pretraining pool: the synthetic clips and {pool.recorded.hours:.1f} h of real recordings")
        print(pool.recorded.table())
    seconds["suite"] = time.perf_counter() - started

    print(f"[2/5] pretraining {' and '.join(_label(f) for f in settings.families)}, {settings.pretrain_steps} "
          f"steps each at batch {settings.batch_size}", flush=True)
    pretrained = {f: _pretrain(f, settings, suite, stats, out / f"pretrain_{f}", seed, progress, pool=pool)
                  for f in settings.families}
    pre_summary = {family: _pretraining_summary(family, summary, out, settings)
                   for family, summary in pretrained.items()}

    print(f"[3/5] linear probes on frozen embeddings, {len(seeds)} seeds", flush=True)
    long = long_pretrained(settings)
    for family, info in long.items():
        print(f"long-pretrained {_label(family)}: the shipped {info['name']} ({info['steps']} steps)")
    probe_started = time.perf_counter()
    probes, curve = _run_probes(suite, settings, stats, out, seed, seeds, long)
    seconds["probes"] = time.perf_counter() - probe_started
    for family in settings.families:
        _clean_checkpoints(out / f"pretrain_{family}", keep_checkpoints)

    print(f"[4/5] low-label fine-tuning: {settings.labels_per_class} labelled clips per class, "
          f"{settings.finetune_steps} steps, {len(seeds)} seeds", flush=True)
    rows = _low_label_runs(suite, settings, stats, out, seeds, long, progress, keep_checkpoints)

    print("[5/5] results (test sets: voices, words and programs unseen in training and in the pool)")
    probe_table, finetune_table = _print_results(settings, seeds, probes, rows, pre_summary)
    plots = draw_plots(out, settings, pre_summary, probes, curve, rows, suite)
    seconds["total"] = time.perf_counter() - started
    results = {"mode": mode, "seed": seed, "seeds": seeds, "settings": asdict(settings), "suite": suite.stats(),
               "pool": {"name": pool.name, "recorded": pool.recorded.sources if pool.recorded else []},
               "long": {f: {"name": info["name"], "steps": info["steps"]} for f, info in long.items()},
               "pretraining": pre_summary, "probes": probes, "probe_gain_by_step": curve, "finetuning": rows,
               "tables": {"probes": probe_table, "finetuning": finetune_table}, "plots": plots,
               "seconds": seconds}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"plots and results in {out} ({seconds['total'] / 60:.1f} min in all)")
    return results


# -- plots -------------------------------------------------------------------------------

def _pretraining_figure(plt, out: Path, settings: DemoSettings, pre_summary: dict):
    """The fresh pretraining runs' loss and masked-patch accuracy against steps."""
    families = settings.families
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for family in families:
        with open(out / f"pretrain_{family}" / "metrics.csv") as handle:
            history = list(csv.DictReader(handle))
        points = [(float(r["step"]), float(r["train_loss"])) for r in history if r.get("train_loss")]
        if points:
            axes[0].plot(*zip(*points), label=_label(family), color=FAMILY_COLOURS.get(family))
        acc = pre_summary[family]["valid_acc_by_step"]
        if acc:
            axes[1].plot([s for s, _ in acc], [100 * a for _, a in acc], "o-", label=_label(family), markersize=4,
                         color=FAMILY_COLOURS.get(family))
    axes[1].axhline(100 / settings.num_masked, color="grey", ls=":", label="chance")
    axes[0].set_title("pretraining loss (InfoNCE + 10 x MSE)")
    axes[0].set_ylabel("loss")
    axes[1].set_title("masked-patch accuracy (official definition, validation)")
    axes[1].set_ylabel("accuracy (%)")
    for ax in axes:
        ax.set_xlabel("optimiser step")
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def _gain_figure(plt, settings: DemoSettings, probes: dict, curve: dict):
    """Probe accuracy against pretraining steps, per task (0 = random init, the last
    point the shipped long-pretrained encoder where there is one)."""
    tasks, families = settings.tasks, settings.families
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.6), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], tasks):
        for family in families:
            points = curve[task][family]
            ax.plot([s for s, _ in points], [100 * a for _, a in points], "o-", color=FAMILY_COLOURS.get(family),
                    label=_label(family))
        ax.axhline(100 * probes[task]["chance"], color="grey", ls=":", label="chance")
        ax.set_xscale("symlog", linthresh=100)  # the demo's steps and a long-pretrained encoder's, on one axis
        ax.set_title(f"{task}: linear probe vs pretraining\n(one seed; the tables average {settings.seeds})", fontsize=9)
        ax.set_xlabel("pretraining step (0 = random init)")
        ax.set_ylabel("probe test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def draw_plots(out: Path, settings: DemoSettings, pre_summary: dict, probes: dict, curve: dict, rows: list[dict],
               suite) -> list[str]:
    """Pretraining curves, probe and fine-tuning bars with error bars, gain vs steps,
    a confusion matrix and an embedding projection (file names relative to ``out``)."""
    from .errors import require

    matplotlib = require("matplotlib", "the demo's plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths.append(name)

    families, tasks = settings.families, settings.tasks
    save(_pretraining_figure(plt, out, settings, pre_summary), "pretraining.png")

    # probes and fine-tuning: bars with error bars (sd over seeds) and chance lines
    probe_series = ["log-mel"] + [f"{f} {k}" for f in families for k in ("random init", "pretrained", "long")
                                  if f"{f} {k}" in probes[tasks[0]]]
    probe_values = {name: [[r["test"] for r in probes[t][name]] for t in tasks] for name in probe_series}
    tune_series = [f"{f} {k}" for f in families for k in ("scratch", "pretrained", "long")
                   if any(f"{r['model']} {r['init']}" == f"{f} {k}" for r in rows)]
    tune_values = {name: [[r["acc"] for r in rows if r["task"] == t and f"{r['model']} {r['init']}" == name]
                          for t in tasks] for name in tune_series}
    chance = [probes[t]["chance"] for t in tasks]
    for name, series, values, title in (
            ("probes.png", probe_series, probe_values,
             f"linear probes on frozen embeddings ({settings.probe_train_clips} training clips)"),
            ("finetuning.png", tune_series, tune_values,
             f"low-label fine-tuning ({settings.labels_per_class} labels per class, "
             f"{settings.finetune_steps} steps)")):
        fig, ax = plt.subplots(figsize=(9, 4))
        width = 0.8 / len(series)
        for k, label in enumerate(series):
            stats = [_mean_sd(v) for v in values[label]]
            xs = [t + (k - (len(series) - 1) / 2) * width for t in range(len(tasks))]
            ax.bar(xs, [100 * m for m, _ in stats], width, yerr=[100 * s for _, s in stats], capsize=3,
                   **_bar_style(label))
        for t, c in enumerate(chance):
            ax.hlines(100 * c, t - 0.45, t + 0.45, colors="k", linestyles=":", label="chance" if t == 0 else None)
        ax.set_xticks(range(len(tasks)), tasks)
        ax.set_ylabel(f"test accuracy (%), mean +- sd over {settings.seeds} seeds")
        ax.set_ylim(0, 100)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        save(fig, name)

    save(_gain_figure(plt, settings, probes, curve), "gain_vs_steps.png")

    if "kws" in tasks:
        paths.append(_confusion(out, rows, suite, families[0]))
    if "speaker" in tasks:
        paths.append(_projection(out, suite, families[0]))
    return paths


#: One colour per family in every figure; within it, the shade says how it was initialised.
FAMILY_COLOURS = {"ssamba": "tab:blue", "ssast": "tab:orange", "mambaout": "tab:green"}
_INIT_STYLES = {"random init": ("random init", 0.3, "//"), "scratch": ("scratch", 0.3, "//"),
                "pretrained": ("fresh pretraining", 0.65, ""), "long": ("long-pretrained", 1.0, "")}


def _bar_style(series: str) -> dict:
    """Colour, shade and legend label of a bar series (``"log-mel"`` or ``"<family> <init>"``)."""
    if series == "log-mel":
        return {"color": "grey", "label": "log-mel"}
    family, init = series.split(" ", 1)
    name, alpha, hatch = _INIT_STYLES[init]  # untrained bars hatched, beside their family's solid ones
    return {"color": FAMILY_COLOURS.get(family, "k"), "alpha": alpha, "edgecolor": FAMILY_COLOURS.get(family, "k"),
            "hatch": hatch, "label": f"{_label(family)} {name}"}


def _label(family: str) -> str:
    """How plots and headings name a family."""
    return {"ssamba": "SSAMBA", "ssast": "SSAST", "mambaout": "MambaOut"}.get(family, family)


def _projection(out: Path, suite, family: str) -> str:
    """PCA of the pretrained ``family``'s clip embeddings of the speaker test clips,
    coloured by speaker."""
    import matplotlib.pyplot as plt
    import torch

    from .data import ClipDataset, ClipDatasetConfig, collate_clips, read_label_csv
    from .models import load_model

    encoder = load_model(out / f"pretrain_{family}").eval()
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
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title(f"pretrained {_label(family)} (no labels seen): speaker test clips, PCA")
    fig.tight_layout()
    fig.savefig(out / "embeddings_speaker.png", dpi=110)
    plt.close(fig)
    return "embeddings_speaker.png"


def _confusion(out: Path, rows: list[dict], suite, family: str) -> str:
    """The kws confusion matrix of the first seed's low-label pretrained ``family``."""
    import matplotlib.pyplot as plt
    import torch

    from .data import ClipDataset, ClipDatasetConfig, collate_clips, read_label_csv
    from .models import load_model

    run = next(r["run"] for r in rows if r["task"] == "kws" and r["model"] == family and r["init"] == "pretrained")
    model = load_model(out / run).eval()
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
    image = ax.imshow(matrix.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the spoken word's clips")
    ax.set_xticks(range(n), labels.names, rotation=90, fontsize=6)
    ax.set_yticks(range(n), labels.names, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("spoken")
    ax.set_title(f"kws, pretrained {_label(family)}, few labels: {100 * (predicted == truth).float().mean():.1f}% "
                 "on unseen voices")
    fig.tight_layout()
    fig.savefig(out / "confusion_kws.png", dpi=110)
    plt.close(fig)
    return "confusion_kws.png"



def cmd_demo(args) -> int:
    """Offline demo: build the synthetic audio suite and the pool's real recordings,
    pretrain SSAMBA and SSAST for equal steps, then compare random-init, freshly
    pretrained, long-pretrained (shipped) and log-mel features by linear probes and
    low-label fine-tuning on keyword spotting, speaker ID and sounds, over 3 seeds."""
    from .allocator import apply_allocator_policy
    from .errors import require

    for module, purpose in (("espeakng_loader", "the demo's speech"), ("tinysoundfont", "the demo's instrument notes"),
                            ("matplotlib", "the demo's plots")):
        require(module, purpose)  # all three up front, not after an hour of work
    apply_allocator_policy()
    mode = "quick" if args.quick else "full" if args.full else "default"
    run_demo(args.out, mode=mode, seed=args.seed, cache_dir=args.cache, progress=not args.no_progress,
             keep_checkpoints=args.keep_checkpoints, families=args.families, tasks=args.tasks,
             pretrain_steps=args.pretrain_steps)
    return 0


def _checked_choice(chosen, known: tuple[str, ...]) -> tuple[str, ...]:
    """``chosen`` as a tuple: at least one of ``known``, each at most once (else ``ValueError``)."""
    chosen = tuple(chosen)
    if not chosen or any(c not in known for c in chosen) or len(set(chosen)) != len(chosen):
        raise ValueError(f"{','.join(chosen) or '(none)'}: give a comma-separated list of {', '.join(known)}, "
                         "each at most once")
    return chosen


def _choice_list(known: tuple[str, ...]):
    """An argparse type: a comma-separated subset of ``known``, in the order given."""
    import argparse

    def parse(text: str) -> tuple[str, ...]:
        try:
            return _checked_choice((c.strip() for c in text.split(",") if c.strip()), known)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


def add_demo_parser(sub) -> None:
    default, quick, full = MODES["default"], MODES["quick"], MODES["full"]
    p = sub.add_parser("demo", help=cmd_demo.__doc__, description=cmd_demo.__doc__ + (
        f" Budgets are optimiser steps, so a seed gives the same table on any machine. Default: "
        f"{default.pretrain_steps} pretraining steps, {default.finetune_steps}-step fine-tuning runs on "
        f"{default.labels_per_class} labels per class, plus the shipped long-pretrained encoders (the "
        "README's \"The demo\" gives a measured wall time and its machine); --quick: a smoke run of a few "
        f"minutes; --full: {full.pretrain_steps} pretraining steps, {full.finetune_steps}-step runs on "
        f"{full.labels_per_class} labels per class."))
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help=f"a smaller suite and {quick.pretrain_steps}/{quick.finetune_steps}-step budgets "
                           "(a smoke run)")
    size.add_argument("--full", action="store_true", help="longer pretraining and fine-tuning budgets")
    p.add_argument("--out", default="demo_out", help="folder for the runs, plots and results.json")
    p.add_argument("--cache", default=None, help="where the audio suite is cached (default: ~/.cache/ssamba/corpora)")
    p.add_argument("--seed", type=int, default=0, help="seed of the suite, pretraining and the first of the 3 "
                                                       "probe/fine-tuning seeds (seed, seed+1, seed+2)")
    p.add_argument("--families", type=_choice_list(FAMILIES + OPTIONAL_FAMILIES), default=FAMILIES,
                   metavar="LIST", help=f"encoders to compare, of {', '.join(FAMILIES + OPTIONAL_FAMILIES)} "
                                        f"(default {','.join(FAMILIES)}; mambaout is SSAMBA without its SSM: the "
                                        "MambaOut ablation)")
    p.add_argument("--tasks", type=_choice_list(TASKS), default=TASKS, metavar="LIST",
                   help=f"tasks to probe and fine-tune on, of {', '.join(TASKS)} (default all); a family's "
                        "and a task's numbers do not depend on the others run beside them")
    p.add_argument("--pretrain-steps", type=at_least(1), default=None, metavar="N",
                   help="pretraining steps instead of the mode's; 10000 reproduces the shipped long-pretrained "
                        "encoders (hours on a CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or progress lines")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep the runs' checkpoints (optimiser states; by default only final models and metrics)")
    p.set_defaults(func=cmd_demo)
