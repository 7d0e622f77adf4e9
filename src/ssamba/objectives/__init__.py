"""Objectives: masking, prediction heads and losses. They return dicts of scalars."""

from .masking import cluster_mask, random_mask
from .patch_modeling import MaskedPatchModeling, PatchModelingConfig, info_nce, patchify

__all__ = [
    "MaskedPatchModeling",
    "PatchModelingConfig",
    "cluster_mask",
    "info_nce",
    "patchify",
    "random_mask",
]
