"""SSAST: self-supervised audio spectrogram transformer (Gong et al., AAAI 2022).

A DeiT encoder over spectrogram patches (16x16) or frames (128x2): class and
distillation tokens at positions 0 and 1, learned absolute positions, pre-norm
transformer blocks (LayerNorm eps 1e-6, MLP ratio 4), one final norm. Attention is
PyTorch's SDPA by default, or the explicit ``softmax(QK^T)V`` of the official code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Iterator, Literal, Sequence

import torch
from annotated_types import Le
from torch import Tensor, nn

from ..config import Depth, NonNegativeInt, PositiveFloat, Width
from ..frontend import FrontendConfig
from ..layers import TransformerBlock, linear_drop_path_rates
from .base import EncoderConfig, SpectrogramEncoder
from .registry import register_family, register_preset


@dataclass
class SSASTConfig(EncoderConfig):
    """SSAST encoder options; defaults are SSAST-tiny with 16x16 patches."""

    depth: Depth = 12
    num_heads: Width = 3
    mlp_ratio: Annotated[PositiveFloat, Le(64)] = 4.0
    norm_eps: PositiveFloat = 1e-6
    num_prefix_tokens: Annotated[NonNegativeInt, Le(64)] = 2  # DeiT cls + dist tokens
    attention: Literal["sdpa", "explicit"] = "sdpa"  # or "explicit" (materialises the L x L matrix)


@register_family("ssast", SSASTConfig)
class SSAST(SpectrogramEncoder):
    """Transformer spectrogram encoder; see the module docstring."""

    def __init__(self, config: SSASTConfig, frontend: FrontendConfig | None = None, labels: dict | None = None):
        super().__init__(config, config.num_prefix_tokens, frontend, labels)
        dim = config.embed_dim
        rates = linear_drop_path_rates(config.drop_path_rate, config.depth)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, config.num_heads, config.mlp_ratio, config.attention,
                             config.norm_eps, drop_path=rates[i])
            for i in range(config.depth)
        )
        self.norm = nn.LayerNorm(dim, eps=config.norm_eps)
        for module in self.blocks.modules():  # timm ViT init
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    @property
    def attention_units(self) -> int:
        """Attention heads."""
        return self.config.num_heads

    def attention_maps(self, spec: Tensor, layers: list[int], channels: Sequence[int] = (),
                       absolute: bool = True) -> Iterator[tuple[str, Tensor, Tensor | None]]:
        """:meth:`SpectrogramEncoder.attention_maps`: each block's softmax attention,
        averaged over heads (``channels`` are heads kept whole; ``absolute`` changes
        nothing: the weights are positive)."""
        inputs = self.block_inputs(spec, {i: self.blocks[i].attn for i in layers})
        for i in layers:
            with torch.no_grad():
                weights = self.blocks[i].attn.attention_weights(inputs[i][0])  # (B, H, L, L)
            yield f"layer{i}/attention", weights.mean(1), (weights[:, list(channels)] if channels else None)

    def encode(self, tokens: Tensor, hidden_states: list[Tensor] | None = None) -> Tensor:
        for block in self.blocks:
            tokens = block(tokens)
            if hidden_states is not None:
                hidden_states.append(tokens)
        return self.norm(tokens)


_SIZES = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}
_KINDS = {"patch": ((16, 16), (16, 16)), "frame": ((128, 2), (128, 2))}


def _ssast_preset(size: str, kind: str) -> None:
    dim, heads = _SIZES[size]
    patch_size, patch_stride = _KINDS[kind]

    def preset() -> SSASTConfig:
        return SSASTConfig(embed_dim=dim, num_heads=heads, patch_size=patch_size, patch_stride=patch_stride)

    preset.__name__ = f"ssast_{size}_{kind}"
    preset.__doc__ = f"SSAST-{size}, {kind} model: D={dim}, {heads} heads, 12 blocks, kernel {patch_size}."
    register_preset(preset)


for _size in _SIZES:
    for _kind in _KINDS:
        _ssast_preset(_size, _kind)


@register_preset
def ssast_test_patch() -> SSASTConfig:
    """A tiny SSAST for tests: D=32, 2 heads, 2 blocks, 64 frames."""
    return SSASTConfig(embed_dim=32, num_heads=2, depth=2, input_tdim=64)


@register_preset
def ssast_test_frame() -> SSASTConfig:
    """A tiny frame-based SSAST for tests: kernel 128x2, D=32, 2 blocks, 64 frames."""
    return SSASTConfig(embed_dim=32, num_heads=2, depth=2, input_tdim=64,
                       patch_size=(128, 2), patch_stride=(128, 2))
