"""Clip datasets over manifests: audio file -> (augmented) normalised log-mel + target.

Randomness is a function of ``(seed, epoch, index)`` only: each item seeds its own
``torch.Generator``, so results do not depend on the number of DataLoader workers or on
the order items are fetched in. Call :meth:`ClipDataset.set_epoch` before iterating an
epoch (with ``persistent_workers=False``, the default, each ``iter(loader)`` copies the
dataset, epoch included, into the workers).

Bad clips (missing, unreadable, empty, NaN samples, shorter than one frame) do not crash
a run: the item is ``None`` with a :class:`BadClipWarning` naming the file and the reason,
:func:`collate_clips` drops and counts them, and :class:`BadClipTracker` stops the run
when too many are bad.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..config import NonNegativeInt, Probability, check_keys, option
from ..errors import UserError
from ..frontend import FrontendConfig, LogMelFrontend, load_audio
from ..frontend.logmel import NonFiniteFeaturesError
from .augment import add_noise_and_roll, mixup_waveforms, sample_mixup_lambda, spec_augment
from .manifest import ClipEntry, LabelMap, read_manifest


class BadClipWarning(UserWarning):
    """A clip was skipped because its audio could not be used."""


@dataclass
class AugmentOptions:
    """The augmentations of a fine-tuning training set, shared by :class:`ClipDatasetConfig`
    and the experiment's ``data`` section (``ssamba.training.experiment.DataSection``).

    Fine-tuning recipes (spec section 6): AudioSet-20K ``freqm=48, timem=192, mixup=0.5``;
    ESC-50 ``freqm=24, timem=96, noise=True``; Speech Commands ``freqm=48, timem=48,
    mixup=0.6, noise=True``.
    """

    freqm: NonNegativeInt = option(0,
                                   'SpecAugment frequency mask width is uniform in [0, freqm) bins (training set only)')
    timem: NonNegativeInt = option(0, 'SpecAugment time mask width is uniform in [0, timem) frames (training set only)')
    mixup: Probability = option(0.0,
                                'probability of mixing a clip with another random clip of the set (training set only)')
    noise: bool = option(False, 'add uniform noise and roll in time after normalisation (training set only)')


@dataclass
class ClipDatasetConfig(AugmentOptions):
    """Options of :class:`ClipDataset`; defaults are an un-augmented (evaluation) set.
    The augmentations (:class:`AugmentOptions`) apply only with ``augment=True``."""

    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    mixup_alpha: float = 10.0  # lambda ~ Beta(mixup_alpha, mixup_alpha)
    augment: bool = False  # apply the augmentations above (training sets; pretraining sets do not)
    # quirk (official): SpecAugment masks the log-mel *before* normalisation with 0, so a
    # masked cell of the model input is (0 - mean) / (2 std). True masks the normalised
    # input with 0 instead.
    mask_after_norm: bool = False
    max_bad_fraction: float = 0.05  # share of bad clips tolerated by BadClipTracker
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.frontend, dict):
            check_keys(FrontendConfig, self.frontend, "frontend")
            self.frontend = FrontendConfig(**self.frontend)
        if self.freqm < 0 or self.timem < 0:
            raise ValueError(f"freqm and timem must be >= 0, got {self.freqm}, {self.timem}")
        if not 0.0 <= self.mixup <= 1.0:
            raise ValueError(f"mixup is a probability in [0, 1], got {self.mixup}")
        if self.mixup_alpha <= 0:
            raise ValueError(f"mixup_alpha must be > 0, got {self.mixup_alpha}")
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")

    @classmethod
    def for_experiment(cls, data, frontend: FrontendConfig, seed: int, augment: bool) -> "ClipDatasetConfig":
        """The options an experiment's ``data`` section (an :class:`AugmentOptions` with
        ``max_bad_fraction``) gives a data set: its augmentations when ``augment``."""
        options = {f.name: getattr(data, f.name) for f in dataclasses.fields(AugmentOptions)} if augment else {}
        return cls(frontend=frontend, augment=augment, seed=seed, max_bad_fraction=data.max_bad_fraction,
                   **options)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ClipDatasetConfig":
        """Build from a (JSON) dict, refusing unknown keys, ``frontend`` given as a dict."""
        check_keys(cls, values)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, epoch, index)`` (well mixed by NumPy's SeedSequence)."""
    words = [v & 0xFFFFFFFFFFFFFFFF for v in (seed, epoch, index)]  # fixed width: no collisions
    entropy = [w for v in words for w in (v & 0xFFFFFFFF, v >> 32)]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0]))


def _warn_bad(path: str, reason: str) -> None:
    warnings.warn(f"skipping bad clip {path!r}: {reason}", BadClipWarning, stacklevel=3)


class ClipDataset(torch.utils.data.Dataset):
    """Clips of a manifest as model inputs.

    ``dataset[i]`` is ``None`` for a bad clip (with a :class:`BadClipWarning`), else a dict:

    - ``"spec"``: float32 ``(T, F)`` normalised log-mel, ``T = frontend.target_length``,
      ``F = frontend.num_mel_bins``, augmented when ``config.augment``;
    - ``"target"``: float32 ``(C,)`` multi-hot (mixed by lambda under mixup), or ``(0,)``
      without a label map;
    - ``"index"``: ``i``.

    Steps: load (16 kHz mono via :func:`ssamba.frontend.load_audio`); mixup with
    probability ``mixup`` against a uniformly drawn clip of the set (possibly itself);
    log-mel, pad/crop, normalise (:class:`ssamba.frontend.LogMelFrontend`); SpecAugment;
    noise and roll. All labels are checked against ``label_map`` up front, so an unknown
    label is a ``ValueError`` at construction, never a silently wrong target.
    """

    def __init__(
        self,
        manifest: str | Path | Sequence[ClipEntry],
        config: ClipDatasetConfig | None = None,
        label_map: LabelMap | None = None,
    ):
        self.entries: list[ClipEntry] = (
            read_manifest(manifest) if isinstance(manifest, (str, Path)) else list(manifest)
        )
        self.config = config or ClipDatasetConfig()
        self.label_map = label_map
        self.frontend = LogMelFrontend(self.config.frontend)
        self.epoch = 0
        if label_map is not None:
            unlabelled = [e.wav for e in self.entries if not e.labels]
            if unlabelled:
                raise ValueError(
                    f"{len(unlabelled)} manifest entries have no labels (first: {unlabelled[0]!r}) "
                    "but a label map was given; drop them or build the dataset without labels"
                )
            for entry in self.entries:  # unknown ids raise here, naming the label and the entry
                for mid in entry.labels:
                    label_map.index(mid, entry.wav)

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (call before creating the epoch's iterator)."""
        self.epoch = int(epoch)

    @property
    def num_classes(self) -> int:
        return self.label_map.num_classes if self.label_map is not None else 0

    def target(self, index: int) -> Tensor:
        """Un-mixed target ``(C,)`` of entry ``index`` (``(0,)`` without a label map)."""
        if self.label_map is None:
            return torch.zeros(0)
        return self.label_map.encode(self.entries[index])

    def load_waveform(self, index: int, info: dict | None = None) -> Tensor | None:
        """Waveform ``(S,)`` of entry ``index``, or ``None`` (with a warning) if it is unusable."""
        path = self.entries[index].wav
        wave, problem = load_clip(path, self.frontend, info)
        if wave is None:
            _warn_bad(path, problem)
        return wave

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        index = int(index)  # samplers may hand NumPy or tensor integers
        if not 0 <= index < len(self.entries):
            raise IndexError(f"index {index} out of range for {len(self.entries)} clips")
        c = self.config
        gen = item_generator(c.seed, self.epoch, index)
        source: dict = {}
        wave = self.load_waveform(index, source)
        if wave is None:
            return None
        target = self.target(index)

        if c.augment and c.mixup > 0 and torch.rand((), generator=gen).item() < c.mixup:
            partner = int(torch.randint(len(self.entries), (1,), generator=gen).item())
            lam = sample_mixup_lambda(gen, c.mixup_alpha)
            other = self.load_waveform(partner)
            if other is not None:  # a bad partner is warned about; the clip stays unmixed
                wave = mixup_waveforms(wave, other, lam)
                target = lam * target + (1.0 - lam) * self.target(partner)

        try:
            spec = clip_features(wave, self.frontend, c, gen)
        except NonFiniteFeaturesError as err:  # a bad clip like the others: named, counted, skipped
            _warn_bad(self.entries[index].wav, str(err))
            return None
        return {"spec": spec, "target": target.float(), "index": index, **_source_fields(source, c.frontend)}


def clip_features(wave: Tensor, frontend: LogMelFrontend, config: ClipDatasetConfig,
                  generator: torch.Generator) -> Tensor:
    """The model input ``(T, F)`` of one (possibly mixed) waveform that :func:`load_clip`
    accepted, through the front end; when ``config.augment``, SpecAugment (on the
    un-normalised log-mel, as SSAST; after normalisation with ``mask_after_norm``) and
    noise."""
    c = config
    masks = c.augment and (c.freqm > 0 or c.timem > 0)

    def mask(spec: Tensor) -> Tensor:
        return spec_augment(spec, c.freqm, c.timem, generator, mask_value=0.0)

    spec, _ = frontend.features(wave, augment=mask if masks and not c.mask_after_norm else None, checked=True)
    spec = spec[0]
    if masks and c.mask_after_norm:
        spec = mask(spec)
    if c.augment and c.noise:
        spec = add_noise_and_roll(spec, generator)
    return spec.float().contiguous()


def load_clip(path: str, frontend: LogMelFrontend, info: dict | None = None) -> tuple[Tensor | None, str]:
    """``(waveform (S,), "")`` if ``path`` is a usable clip, else ``(None, reason)``.

    Usable: the file exists and decodes, and the front end accepts its samples
    (:meth:`LogMelFrontend.problem`: non-empty, finite, at least one frame long).
    ``info`` receives the file's ``rate`` and ``channels`` (:func:`load_audio`).
    """
    if not Path(path).exists():
        return None, "file does not exist"
    try:
        wave = load_audio(path, frontend.config.sample_rate, info=info)
    except ValueError as err:
        return None, str(err)
    except Exception as err:  # resampling or decoding failures of any kind
        return None, f"{type(err).__name__}: {err}"
    problem = frontend.problem(wave)
    return (None, problem) if problem else (wave, "")


def _source_fields(source: dict, frontend: FrontendConfig) -> dict[str, int]:
    """An item's record of the conversions its audio needed: ``resampled_from`` (the file's
    rate, 0 when it was already at the front end's) and ``downmixed`` (0 or 1)."""
    rate = int(source.get("rate", frontend.sample_rate))
    return {"resampled_from": 0 if rate == frontend.sample_rate else rate,
            "downmixed": int(source.get("channels", 1) > 1)}


def collate_clips(items: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Batch :class:`ClipDataset` items, dropping ``None`` (bad) ones.

    Returns ``{"spec": (B, T, F), "target": (B, C), "index": (B,) int64, "num_bad": int,
    "resampled": {source rate: clips}, "downmixed": int}`` where ``B`` counts the good
    items. If every item is bad, ``B = 0`` and ``spec`` / ``target`` are empty ``(0,)``
    tensors.
    """
    good = [item for item in items if item is not None]
    num_bad = len(items) - len(good)
    resampled: dict[int, int] = {}
    for item in good:
        if item.get("resampled_from"):
            resampled[item["resampled_from"]] = resampled.get(item["resampled_from"], 0) + 1
    conversions = {"resampled": resampled, "downmixed": sum(item.get("downmixed", 0) for item in good)}
    if not good:
        return {
            "spec": torch.zeros(0),
            "target": torch.zeros(0),
            "index": torch.zeros(0, dtype=torch.long),
            "num_bad": num_bad,
            **conversions,
        }
    return {
        "spec": torch.stack([item["spec"] for item in good]),
        "target": torch.stack([item["target"] for item in good]),
        "index": torch.tensor([item["index"] for item in good], dtype=torch.long),
        "num_bad": num_bad,
        **conversions,
    }


class TooManyBadClipsError(UserError, RuntimeError):
    """More clips could not be used than ``max_bad_fraction`` allows (the data to fix)."""


class BadClipTracker:
    """Running count of bad clips; raises once their share exceeds ``max_bad_fraction``.

    >>> tracker = BadClipTracker(0.05)
    >>> tracker.update(num_seen=32, num_bad=batch["num_bad"])  # doctest: +SKIP

    ``update`` takes *increments* (clips seen in this batch, bad or good, and how many of
    them were bad). Nothing is raised before ``min_seen`` clips have been seen.
    """

    def __init__(self, max_bad_fraction: float = 0.05, min_seen: int = 20):
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        self.max_bad_fraction = max_bad_fraction
        self.min_seen = min_seen
        self.num_seen = 0
        self.num_bad = 0

    @property
    def fraction(self) -> float:
        return self.num_bad / self.num_seen if self.num_seen else 0.0

    def update(self, num_seen: int, num_bad: int) -> None:
        if num_bad < 0 or num_seen < num_bad:
            raise ValueError(f"need 0 <= num_bad <= num_seen, got num_seen={num_seen}, num_bad={num_bad}")
        self.num_seen += int(num_seen)
        self.num_bad += int(num_bad)
        if self.num_seen >= self.min_seen and self.fraction > self.max_bad_fraction:
            raise TooManyBadClipsError(
                f"{self.num_bad} of {self.num_seen} clips ({self.fraction:.1%}) could not be used, "
                f"more than the limit of {self.max_bad_fraction:.1%}; see the BadClipWarning "
                "messages for which files and why, fix or drop them from the manifest, or raise "
                "the limit with max_bad_fraction"
            )


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one intra-op thread per worker (no oversubscription)."""
    torch.set_num_threads(1)


def compute_stats(
    dataset_or_manifest: ClipDataset | str | Path | Sequence[ClipEntry],
    frontend_config: FrontendConfig | None = None,
    max_clips: int | None = None,
) -> tuple[float, float]:
    """``(mean, std)`` of the un-normalised log-mel values of a dataset's clips.

    Statistics run over every value of every real frame (before padding/cropping, without
    augmentation) of the mean-removed clips; ``std`` is the population standard deviation.
    These are the ``mean`` / ``std`` of :class:`FrontendConfig`. ``frontend_config``
    defaults to the dataset's (or ``FrontendConfig()``); only its filterbank options
    matter. ``max_clips`` uses that many clips evenly spaced through the manifest. Bad
    clips are skipped with a warning; ``ValueError`` if none is usable.
    """
    if isinstance(dataset_or_manifest, ClipDataset):
        entries = dataset_or_manifest.entries
        frontend_config = frontend_config or dataset_or_manifest.config.frontend
    elif isinstance(dataset_or_manifest, (str, Path)):
        entries = read_manifest(dataset_or_manifest)
    else:
        entries = list(dataset_or_manifest)
    frontend = LogMelFrontend(frontend_config or FrontendConfig())
    indices = range(len(entries))
    if max_clips is not None and max_clips < len(entries):
        if max_clips < 1:
            raise ValueError(f"max_clips must be >= 1, got {max_clips}")
        indices = np.unique(np.linspace(0, len(entries) - 1, max_clips).round().astype(int)).tolist()

    count, mean, m2 = 0, 0.0, 0.0  # Chan et al. merge of per-clip (count, mean, M2)
    for i in indices:
        wave, problem = load_clip(entries[i].wav, frontend)
        if wave is None:
            _warn_bad(entries[i].wav, problem)
            continue
        try:
            values = frontend.fbank(wave, checked=True).double().flatten()
        except NonFiniteFeaturesError as err:
            _warn_bad(entries[i].wav, str(err))
            continue
        n = values.numel()
        clip_mean = values.mean().item()
        clip_m2 = (values - clip_mean).square().sum().item()
        delta = clip_mean - mean
        total = count + n
        mean += delta * n / total
        m2 += clip_m2 + delta * delta * count * n / total
        count = total
    if count == 0:
        raise ValueError("no usable clip to compute statistics from")
    return mean, float(np.sqrt(m2 / count))
