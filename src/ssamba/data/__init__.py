"""Data: manifests, label maps, clip datasets and fine-tuning augmentations.

Nothing here imports the models: a batch is ``{"spec": (B, T, F), "target": (B, C), ...}``.
"""

from .augment import add_noise_and_roll, mixup_waveforms, sample_mixup_lambda, spec_augment
from .dataset import (
    BadClipTracker,
    BadClipWarning,
    ClipDataset,
    ClipDatasetConfig,
    collate_clips,
    compute_stats,
    item_generator,
    load_clip,
    worker_init_fn,
)
from .manifest import (
    ClipEntry,
    LabelMap,
    read_label_csv,
    read_manifest,
    split_labels,
    write_label_csv,
    write_manifest,
)

__all__ = [
    "BadClipTracker",
    "BadClipWarning",
    "ClipDataset",
    "ClipDatasetConfig",
    "ClipEntry",
    "LabelMap",
    "add_noise_and_roll",
    "collate_clips",
    "compute_stats",
    "item_generator",
    "load_clip",
    "mixup_waveforms",
    "read_label_csv",
    "read_manifest",
    "sample_mixup_lambda",
    "spec_augment",
    "split_labels",
    "worker_init_fn",
    "write_label_csv",
    "write_manifest",
]
