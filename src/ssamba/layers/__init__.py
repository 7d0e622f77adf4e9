"""Building blocks shared by the SSAMBA, MambaOut and SSAST encoders."""

from .attention import Attention, Mlp, TransformerBlock
from .gated_conv import GatedConvMixer
from .heads import ClassifierHead
from .mamba import BiMambaMixer, MambaBlock, SelectiveSSM
from .norms import DropPath, linear_drop_path_rates, make_norm
from .patch_embed import PatchEmbed, grid_shape, resample_pos_embed

__all__ = [
    "Attention",
    "BiMambaMixer",
    "ClassifierHead",
    "DropPath",
    "GatedConvMixer",
    "MambaBlock",
    "Mlp",
    "PatchEmbed",
    "SelectiveSSM",
    "TransformerBlock",
    "grid_shape",
    "linear_drop_path_rates",
    "make_norm",
    "resample_pos_embed",
]
