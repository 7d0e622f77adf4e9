"""One training loop for pretraining and fine-tuning.

Determinism and exact resume come from deriving every random draw from the seed and a
counter instead of carrying hidden state: the data order of pass ``p`` is a permutation
seeded by ``(seed, p)``, augmentations by ``(seed, p, clip)`` (the dataset), and the masks,
dropout and drop-path of optimiser step ``s`` by ``(seed, s)``. A checkpoint therefore
only needs the weights, the optimiser, the schedule and the step.

Under ``torchrun`` every process reads the same global batch order and takes its own
slice of each global batch (``run.batch_size`` is the global batch); gradients are
averaged by DDP; masks are drawn for the global batch and sliced, so N processes train
like one process with the same global batch. Only rank 0 writes checkpoints, metrics and
pictures; validation is sharded and its results gathered.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader

from ..data import BadClipTracker, ClipDataset, collate_clips, worker_init_fn
from ..device import resolve_device
from ..errors import UserError
from ..fileio import atomic_write_text
from . import distributed
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .optim import LRSchedule, OptimConfig, build_optimizer

log = logging.getLogger(__name__)


class TrainingDivergedError(UserError, FloatingPointError):
    """The loss became NaN or infinite on finite inputs."""


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The training autocast dtype of ``run.precision`` on ``device`` (None: fp32).
    ``auto`` is bf16 on CUDA (fp32 weights and optimiser, bf16 matmuls) and fp32 on CPU."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if precision not in PRECISIONS:
        raise ValueError(f"run.precision must be one of auto, {', '.join(PRECISIONS)}; got {precision!r}")
    return PRECISIONS[precision]


def _seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (SplitMix64 steps)."""
    x = 0x9E3779B97F4A7C15
    for part in parts:
        x = (x ^ (part & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return x >> 1


class _StepModule(torch.nn.Module):
    """Runs the task's step as a module's forward, so DDP can hook the gradients."""

    def __init__(self, task):
        super().__init__()
        self.task_modules = task.modules
        self.task = task

    def forward(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return self.task.step(batch, generator)


class Trainer:
    """Runs ``task`` on ``train_set`` with the optimiser/schedule of ``optim``.

    ``run`` is the experiment's :class:`~ssamba.training.experiment.RunSection`;
    ``experiment`` (a JSON-ready dict) is stored in every checkpoint.
    """

    def __init__(self, task, train_set: ClipDataset, valid_set: ClipDataset | None, optim: OptimConfig,
                 run, experiment: dict[str, Any], num_workers: int = 0, max_bad_fraction: float = 0.05,
                 average_epochs: tuple[int, int] = (0, 0)):
        self.task, self.train_set, self.valid_set = task, train_set, valid_set
        self.optim_config, self.run, self.experiment = optim, run, experiment
        self.num_workers = num_workers
        self.world = distributed.current()
        self.device = torch.device(resolve_device(run.device))
        self.out_dir = Path(run.out_dir)
        if run.batch_size % self.world.size:
            raise ValueError(f"run.batch_size {run.batch_size} is not divisible by the {self.world.size} processes")
        self.local_batch = run.batch_size // self.world.size
        self.task.modules.to(self.device)
        self.autocast_dtype = autocast_dtype(run.precision, self.device)
        # fp16's narrow range needs the loss scaled up before backward (and the gradients
        # unscaled before clipping and the step); bf16 has fp32's range and does not
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast_dtype == torch.float16)
        self.pin_memory = self.device.type == "cuda"
        self.step_module = _StepModule(task)
        if self.world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_module = DistributedDataParallel(self.step_module, device_ids=ids)
        self.optimizer = build_optimizer(task.modules, optim, task.head_prefixes)
        self.schedule = LRSchedule(self.optimizer, optim, maximize=task.maximize)
        self.streaming = isinstance(train_set, torch.utils.data.IterableDataset)  # WebDataset shards
        if self.streaming:  # every rank must run the same number of batches per pass
            self.batches_per_pass = min(distributed.gather_objects(len(train_set) // self.local_batch))
        else:
            self.batches_per_pass = len(train_set) // run.batch_size
        if self.batches_per_pass == 0:
            raise ValueError(
                f"the training set has {len(train_set)} clips, fewer than one batch of {run.batch_size}"
            )
        steps = run.steps_per_epoch or self.batches_per_pass // optim.grad_accum
        self.steps_per_epoch = max(1, steps)
        self.total_steps = run.epochs * self.steps_per_epoch
        if run.max_steps:
            self.total_steps = min(self.total_steps, run.max_steps)
        if optim.warmup_steps >= self.total_steps and self.world.is_main:
            log.warning("optim.warmup_steps %d is not shorter than the run's %d steps: the learning rate never "
                        "reaches optim.lr %g (it ends at %.2g)", optim.warmup_steps, self.total_steps, optim.lr,
                        optim.lr * self.total_steps / max(1, optim.warmup_steps))
        self.step = 0
        self.bad = BadClipTracker(max_bad_fraction)
        self.average_epochs = average_epochs
        self.averaged: dict[str, torch.Tensor] | None = None
        self.averaged_count = 0
        self.history: list[dict[str, Any]] = []
        self._tensorboard = None
        self._saved_step = -1
        self._conversions: dict | None = {"clips": 0, "downmixed": 0, "rates": {}}  # until the first epoch ends

    # -- data -------------------------------------------------------------------------
    def _loader(self, dataset, batches: list[list[int]]) -> DataLoader:
        return DataLoader(dataset, batch_sampler=batches, num_workers=self.num_workers,
                          collate_fn=collate_clips, worker_init_fn=worker_init_fn,
                          persistent_workers=False, pin_memory=self.pin_memory)

    def _stream_batches(self) -> Iterator[dict]:
        """Micro-batches of a streamed (sharded) training set; each rank reads its own
        shards; resuming mid-pass re-reads and skips the batches already trained on."""
        micro = self.step * self.optim_config.grad_accum
        while True:
            data_pass, offset = divmod(micro, self.batches_per_pass)
            self.train_set.set_epoch(data_pass)
            loader = DataLoader(self.train_set, batch_size=self.local_batch, collate_fn=collate_clips,
                                num_workers=self.num_workers, worker_init_fn=worker_init_fn,
                                pin_memory=self.pin_memory)
            got = 0
            for i, batch in enumerate(loader):
                if i >= self.batches_per_pass:
                    break
                got = i + 1
                if i >= offset:
                    micro += 1
                    yield batch
            if got < self.batches_per_pass:  # never spin on a pass that comes up short
                raise ValueError(
                    f"the training shards gave {got} batches of {self.local_batch} clips in pass {data_pass}, "
                    f"fewer than the {self.batches_per_pass} their clip counts promise: a shard changed "
                    "or its count in shards.json is wrong")

    def _train_batches(self) -> Iterator[dict]:
        """Micro-batches from the current position on, pass after pass."""
        if self.streaming:
            yield from self._stream_batches()
            return
        micro = self.step * self.optim_config.grad_accum
        size, local = self.run.batch_size, self.local_batch
        start = self.world.rank * local  # this process's slice of every global batch
        while True:
            data_pass, offset = divmod(micro, self.batches_per_pass)
            order = torch.randperm(len(self.train_set), generator=torch.Generator().manual_seed(
                _seed(self.run.seed, data_pass)))
            batches = [order[i * size + start:i * size + start + local].tolist()
                       for i in range(self.batches_per_pass)]
            self.train_set.set_epoch(data_pass)
            for batch in self._loader(self.train_set, batches[offset:]):
                micro += 1
                batch["batch_slice"] = (start, size)  # this process's rows of the global batch
                yield batch

    def _eval_batches(self, dataset) -> Iterator[dict]:
        """This process's share of the evaluation batches (whole batches, round robin)."""
        size = self.local_batch
        dataset.set_epoch(0)
        if isinstance(dataset, torch.utils.data.IterableDataset):  # shards: split by rank already
            return iter(DataLoader(dataset, batch_size=size, collate_fn=collate_clips,
                                   num_workers=self.num_workers, worker_init_fn=worker_init_fn))
        batches = [list(range(i, min(i + size, len(dataset)))) for i in range(0, len(dataset), size)]
        return iter(self._loader(dataset, batches[self.world.rank::self.world.size]))

    # -- checkpoints ------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "modules": {k: v for k, v in self.task.modules.state_dict().items() if not k.startswith("encoder.")},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "experiment": self.experiment,
            "history": self.history,
            "averaged_count": self.averaged_count,
        }
        if self.scaler.is_enabled():
            state["grad_scaler"] = self.scaler.state_dict()
        if self.averaged is not None:
            state["averaged"] = self.averaged
        return state

    def save(self) -> Path | None:
        self._saved_step = self.step
        path = None
        if self.world.is_main:
            path = save_checkpoint(self.out_dir / "checkpoints", self.step, self.task.modules["encoder"],
                                   self.state(), keep=self.run.keep_checkpoints)
        distributed.barrier()  # nobody runs ahead of (or resumes from) a half-written checkpoint
        return path

    def resume(self, path: str | Path | None = None) -> bool:
        """Continue from ``path`` or from the run's latest checkpoint; False if there is none."""
        path = Path(path) if path else latest_checkpoint(self.out_dir / "checkpoints")
        if path is None:
            return False
        encoder, state = load_checkpoint(path, map_location=str(self.device))
        modules = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
        modules.update(state["modules"])
        self.task.modules.load_state_dict(modules, strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler.is_enabled() and "grad_scaler" in state:
            self.scaler.load_state_dict(state["grad_scaler"])
        self.step = state["step"]
        self.history = state["history"]
        self.averaged = state.get("averaged")
        self.averaged_count = state["averaged_count"]
        log.info("resumed from %s at step %d", path, self.step)
        return True

    # -- training ---------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def train_step(self, micro_batches: list[dict]) -> dict[str, float]:
        modules, accum = self.task.modules, len(micro_batches)
        modules.train()
        self.schedule.apply(self.step)
        totals: dict[str, float] = {}
        for k, batch in enumerate(micro_batches):
            torch.manual_seed(_seed(self.run.seed, self.step, k, 1, self.world.rank))  # dropout, drop path
            generator = torch.Generator().manual_seed(_seed(self.run.seed, self.step, k, 2))  # masks
            batch = {key: v.to(self.device, non_blocking=self.pin_memory) if torch.is_tensor(v) else v
                     for key, v in batch.items()}
            last = k == accum - 1
            sync = self.step_module.no_sync() if self.world.distributed and not last else nullcontext()
            with sync, self._autocast():
                out = self.step_module(batch, generator)
            with sync:
                self.scaler.scale(out["loss"] / accum).backward()
            for key, value in out.items():
                totals[key] = totals.get(key, 0.0) + value.item() / accum
        totals = distributed.mean_scalars(totals)
        if not math.isfinite(totals["loss"]):
            raise TrainingDivergedError(
                f"the loss is {totals['loss']} at step {self.step}, on inputs that were all finite (clips whose "
                "features are not are skipped as bad): the run diverged; resume from the last checkpoint with a "
                "lower optim.lr or with optim.grad_clip set")
        if self.optim_config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(modules.parameters(), self.optim_config.grad_clip)
        self.scaler.step(self.optimizer)  # with fp16, skipped (and the scale lowered) on non-finite gradients
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return totals

    def evaluate(self, dataset) -> dict[str, float]:
        """Metrics over the whole of ``dataset`` (sharded over processes, then gathered)."""
        self.task.modules.eval()
        part = self.task.collect(self._eval_batches(dataset), self.device, seed=self.run.seed)
        return self.task.summarize(distributed.gather_objects(part))

    def _end_epoch(self, epoch: int, progress) -> None:
        metrics = self.evaluate(self.valid_set) if self.valid_set is not None else {}
        metric = metrics.get(self.task.metric)
        self.schedule.end_epoch(epoch, metric)
        row = {"step": self.step, "epoch": epoch, **{f"valid_{k}": v for k, v in metrics.items()}}
        self._log(row)
        if metrics and self.world.is_main:
            progress.write(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        first, last = self.average_epochs
        if first and first <= epoch <= last:
            weights = {k: v.detach().float().clone() for k, v in self.task.modules["encoder"].state_dict().items()}
            if self.averaged is None:
                self.averaged = weights
            else:
                for k in self.averaged:
                    self.averaged[k] += weights[k]
            self.averaged_count += 1

    def _count_conversions(self, batch: dict) -> None:
        """Tally the resampled and downmixed clips of the first epoch (one line, not one per file)."""
        if self._conversions is None:
            return
        counts = self._conversions
        counts["clips"] += batch["spec"].shape[0]
        counts["downmixed"] += batch.get("downmixed", 0)
        for rate, n in batch.get("resampled", {}).items():
            counts["rates"][rate] = counts["rates"].get(rate, 0) + n

    def _report_conversions(self, progress) -> None:
        from ..frontend.audio import conversion_summary

        counts, self._conversions = self._conversions, None
        if counts is None or not self.world.is_main:
            return
        line = conversion_summary(counts["rates"], counts["downmixed"], counts["clips"],
                                  self.train_set.config.frontend.sample_rate)
        if line:
            progress.write(f"first epoch: {line}")

    def _open_tensorboard(self) -> None:
        """TensorBoard event files beside metrics.csv, when tensorboard is installed."""
        if not self.world.is_main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self._tensorboard = SummaryWriter(str(self.out_dir / "tensorboard"))

    def _log(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if not self.world.is_main:
            return
        if self._tensorboard is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(key, value, row["step"])
        path = self.out_dir / "metrics.csv"
        keys = sorted({k for r in self.history for k in r}, key=lambda k: (k not in ("step", "epoch"), k))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write_text(path, text.getvalue())  # rewritten whole (columns can grow), never seen half-written

    def fit(self) -> dict[str, Any]:
        """Train to ``total_steps`` (from wherever the trainer stands) and return a summary."""
        from ..progress import progress as progress_bar

        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._open_tensorboard()
        accum = self.optim_config.grad_accum
        progress = progress_bar(self.total_steps, self.out_dir.name, unit="step", initial=self.step,
                                enabled=self.run.progress and self.world.is_main, every=self.run.print_every)
        batches = self._train_batches()
        running: dict[str, float] = {}
        clips, started = 0, time.perf_counter()
        budget, out_of_time = self.run.max_seconds, False
        while self.step < self.total_steps:
            if budget:  # every rank stops at the same step
                out_of_time = any(distributed.gather_objects(time.perf_counter() - started > budget))
                if out_of_time:
                    if self.world.is_main:
                        progress.write(f"time budget of {budget:.0f} s reached at step {self.step}")
                    break
            micro = [next(batches) for _ in range(accum)]
            for batch in micro:
                self.bad.update(batch["spec"].shape[0] + batch["num_bad"], batch["num_bad"])
                self._count_conversions(batch)
            micro = [b for b in micro if b["spec"].shape[0] > 0]
            if not micro:
                continue
            out = self.train_step(micro)
            clips += sum(b["spec"].shape[0] for b in micro)
            for key, value in out.items():
                running[key] = 0.9 * running.get(key, value) + 0.1 * value
            rate = clips / (time.perf_counter() - started)
            progress.update(1)
            progress.set_postfix({**{k: f"{v:.3f}" for k, v in running.items()}, "clips/s": f"{rate:.1f}"})
            if self.step % self.run.log_every == 0:
                self._log({"step": self.step, "epoch": self.step / self.steps_per_epoch,
                           "lr": self.optimizer.param_groups[0]["lr"], **{f"train_{k}": v for k, v in out.items()},
                           "clips_per_s": rate})
            if self.step % self.steps_per_epoch == 0:
                self._report_conversions(progress)
                self._end_epoch(self.step // self.steps_per_epoch, progress)
                self.save()
            elif self.step % self.run.save_every == 0:
                self.save()
        self._report_conversions(progress)  # a run shorter than one epoch says it too
        progress.close()
        if out_of_time and self.valid_set is not None and self.step % self.steps_per_epoch:
            metrics = self.evaluate(self.valid_set)  # the run's last word, off the epoch grid
            self._log({"step": self.step, "epoch": self.step / self.steps_per_epoch,
                       **{f"valid_{k}": v for k, v in metrics.items()}})
        if self._saved_step != self.step:
            self.save()
        if self._tensorboard is not None:
            self._tensorboard.close()
        return self.finish()

    def finish(self) -> dict[str, Any]:
        """Write the final model (and the weight average), the curves (``run.plot``);
        return a summary."""
        from ..models import save_model
        from .plots import plot_curves

        encoder = self.task.modules["encoder"]
        summary: dict[str, Any] = {"steps": self.step, "final_model": str(self.out_dir / "final"),
                                   "bad_clips": self.bad.num_bad}
        if not self.world.is_main:
            return summary
        save_model(encoder, self.out_dir / "final")
        if self.averaged is not None and self.averaged_count:
            current = {k: v.clone() for k, v in encoder.state_dict().items()}
            encoder.load_state_dict({k: (v / self.averaged_count).to(current[k].dtype)
                                     for k, v in self.averaged.items()})
            save_model(encoder, self.out_dir / "final_averaged")
            summary["averaged_model"] = str(self.out_dir / "final_averaged")
            summary["averaged_epochs"] = self.averaged_count
        if not self.run.plot:
            return summary
        try:
            summary["curves"] = str(plot_curves(self.history, self.out_dir / "curves.png"))
        except (ImportError, ValueError) as err:  # no matplotlib, or nothing logged yet
            log.warning("no curves.png: %s", err)
        return summary
