"""Objectives: masking, prediction heads and losses. They return dicts of scalars."""

from .masking import cluster_mask, official_mask, official_mask_from_anchors, random_mask
from .patch_modeling import MaskedPatchModeling, PatchModelingConfig, info_nce, patchify

__all__ = [
    "MaskedPatchModeling",
    "PatchModelingConfig",
    "cluster_mask",
    "info_nce",
    "official_mask",
    "official_mask_from_anchors",
    "patchify",
    "random_mask",
]
