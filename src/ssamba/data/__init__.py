"""Data: dataset layouts, manifests, label maps, clip datasets, tar shards and fine-tuning augmentations.

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
from .layouts import LAYOUTS, DatasetSplits, MissingAudioWarning, prepare, read_layout
from .manifest import (
    ClipEntry,
    LabelMap,
    read_label_csv,
    read_manifest,
    split_labels,
    write_label_csv,
    write_manifest,
)
from .shards import ShardDataset, read_shard_index, write_shards

__all__ = [
    "BadClipTracker",
    "BadClipWarning",
    "ClipDataset",
    "ClipDatasetConfig",
    "ClipEntry",
    "DatasetSplits",
    "LAYOUTS",
    "LabelMap",
    "MissingAudioWarning",
    "ShardDataset",
    "add_noise_and_roll",
    "collate_clips",
    "compute_stats",
    "item_generator",
    "load_clip",
    "mixup_waveforms",
    "prepare",
    "read_label_csv",
    "read_layout",
    "read_manifest",
    "read_shard_index",
    "sample_mixup_lambda",
    "spec_augment",
    "split_labels",
    "worker_init_fn",
    "write_label_csv",
    "write_manifest",
    "write_shards",
]
