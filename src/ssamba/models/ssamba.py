"""SSAMBA: self-supervised audio Mamba (Shams et al., 2024, arXiv 2405.11831).

A Vision-Mamba encoder over spectrogram patches: one class token at position 0, learned
absolute positions, 24 pre-norm blocks of bidirectional ("bimamba v2") Mamba mixers and
a final norm. The presets reproduce the official code, including its quirks, each a
named option:

* ``use_layer_pairing`` - Vim's ``if_bidirectional``: layers run in pairs, the odd one
  on the flipped sequence, and both hidden and residual streams are summed after
  flipping back (computed without flips: the odd layer is "mirrored", its scans run
  the other way);
* ``use_double_final_norm`` - the final norm is applied twice before any head;
* ``use_direction_average`` - the mixer averages its two directions (``if_devide_out``);
* ``use_cls_token`` - a class token at position 0.

:class:`MambaOut` is the ablation with the SSM removed from every mixer (the
``mambaout_*`` presets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Iterator, Literal, Sequence

import torch
from annotated_types import Le
from torch import Tensor, nn

from ..config import Depth, Fraction, NonNegativeInt, PositiveFloat, Width
from ..frontend import FrontendConfig
from ..layers import BiMambaMixer, DropPath, GatedConvMixer, MambaBlock, linear_drop_path_rates, make_norm
from ..ops.hidden_attention import hidden_attention
from .base import EncoderConfig, SpectrogramEncoder
from .registry import register_family, register_preset


@dataclass
class MambaStackConfig(EncoderConfig):
    """The Vim body's options, with or without the SSM: what SSAMBA and MambaOut share."""

    depth: Depth = 24  # Mamba blocks
    d_conv: Width = 4  # depthwise conv width (causal forward, anti-causal backward)
    expand: Depth = 2  # inner width = expand * D
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"  # or "rmsnorm"
    norm_eps: PositiveFloat = 1e-5
    drop_path_rate: Fraction = 0.1
    use_cls_token: bool = True  # one class token at position 0
    use_bidirectional_mixer: bool = True  # bimamba v2; False = causal forward-only mixer
    use_direction_average: bool = True  # quirk: out_proj((y_fwd + y_bwd) / 2)
    use_layer_pairing: bool = True  # quirk: Vim's if_bidirectional layer pairs
    use_double_final_norm: bool = True  # quirk: final norm applied twice


@dataclass
class SSAMBAConfig(MambaStackConfig):
    """SSAMBA encoder options; defaults are the official recipe with ``embed_dim=192`` (tiny)."""

    d_state: Width = 16  # N, SSM state size per channel
    dt_rank: Annotated[NonNegativeInt, Le(1 << 16)] = 0  # 0 means ceil(D / 16)
    scan_backend: str = "auto"  # selective scan backend (ssamba.ops.available_backends())


@dataclass
class MambaOutConfig(MambaStackConfig):
    """MambaOut encoder options: SSAMBA's with the SSM (``d_state``, ``dt_rank``, the scan
    backend) removed; the defaults match ``ssamba_tiny`` but for it."""


def vim_drop_path_rates(rate: float, depth: int) -> list[float]:
    """Vim's schedule: linspace(0, rate, depth) shifted by one block (block 0 gets 0)."""
    return [0.0] + linear_drop_path_rates(rate, depth)[:-1]


@register_family("ssamba", SSAMBAConfig)
class SSAMBA(SpectrogramEncoder):
    """Bidirectional-Mamba spectrogram encoder; see the module docstring."""

    def __init__(self, config: SSAMBAConfig, frontend: FrontendConfig | None = None, labels: dict | None = None):
        if config.use_layer_pairing and config.depth % 2:
            raise ValueError(f"use_layer_pairing needs an even depth, got {config.depth}")
        super().__init__(config, 1 if config.use_cls_token else 0, frontend, labels)
        dim = config.embed_dim
        rates = vim_drop_path_rates(config.drop_path_rate, config.depth)
        self.layers = nn.ModuleList(
            MambaBlock(
                dim,
                self.make_mixer(config),
                norm=config.norm,
                norm_eps=config.norm_eps,
                drop_path=rates[i],
            )
            for i in range(config.depth)
        )
        self.drop_path = DropPath(config.drop_path_rate)
        self.norm_f = make_norm(config.norm, dim, config.norm_eps)
        self._init_weights()

    @staticmethod
    def make_mixer(config: SSAMBAConfig) -> nn.Module:
        """One block's token mixer: the bidirectional Mamba mixer."""
        return BiMambaMixer(
            config.embed_dim,
            d_state=config.d_state,
            d_conv=config.d_conv,
            expand=config.expand,
            dt_rank=config.dt_rank or None,  # the mixer's default: ceil(D / 16)
            bidirectional=config.use_bidirectional_mixer,
            average_directions=config.use_direction_average,
            scan_backend=config.scan_backend,
        )

    @property
    def attention_units(self) -> int:
        """Inner channels of a mixer: each has its own hidden attention."""
        return self.config.expand * self.config.embed_dim

    def attention_maps(self, spec: Tensor, layers: list[int], channels: Sequence[int] = (),
                       absolute: bool = True) -> Iterator[tuple[str, Tensor, Tensor | None]]:
        """:meth:`SpectrogramEncoder.attention_maps`: each scan's hidden attention
        (:mod:`ssamba.ops.hidden_attention`) over the operands the mixer scans, averaged
        over inner channels (of ``|alpha|`` with ``absolute``); the direction that scans
        forward in token order is ``causal``, the other ``anticausal``."""
        inputs = self.block_inputs(spec, {i: self.layers[i].mixer for i in layers})
        for i in layers:
            hidden, mirrored = inputs[i]
            with torch.no_grad():
                for _, reverse, (_, delta, A, B, C, _, _, bias) in self.layers[i].mixer.scan_operands(hidden, mirrored):
                    mean, kept = hidden_attention(delta, A, B, C, bias, True, reverse, absolute=absolute,
                                                  channels=channels)
                    yield f"layer{i}/{'anticausal' if reverse else 'causal'}", mean, kept

    def _init_weights(self) -> None:
        """Vim's ``_init_weights``: zero linear biases (not dt_proj's); out_proj / sqrt(depth)."""
        for module in self.layers.modules():
            if isinstance(module, nn.Linear) and module.bias is not None:
                if not getattr(module.bias, "_no_reinit", False):
                    nn.init.zeros_(module.bias)
        with torch.no_grad():
            for layer in self.layers:
                layer.mixer.out_proj.weight /= math.sqrt(self.config.depth)

    @staticmethod
    def _lean_pair(forward_layer: MambaBlock, backward_layer: MambaBlock, r: Tensor,
                   first: bool) -> tuple[Tensor, Tensor]:
        """One layer pair for inference (no autograd, eval: drop-path is the identity), as
        the pairing in :meth:`encode` computes it, in place, given the residual stream
        ``r`` both blocks see (the caller's tokens for the ``first`` pair, else ours to
        change): the pair's residual is ``2 r``, so one copy of it is made, not four, and
        the backward block's mixer adds its output into the forward block's."""
        out = forward_layer.mixer.infer(r, norm=forward_layer.norm)
        backward_layer.mixer.infer(r, mirrored=True, out=out, norm=backward_layer.norm)
        return out, (r * 2 if first else r.mul_(2))

    def encode(self, tokens: Tensor, hidden_states: list[Tensor] | None = None) -> Tensor:
        hidden, residual = tokens, None
        del tokens  # a caller that keeps no reference lets the first pair free the input
        lean = self.config.use_layer_pairing and not torch.is_grad_enabled() and not self.training
        if lean:
            for forward_layer, backward_layer in zip(self.layers[0::2], self.layers[1::2]):
                first = residual is None
                r = hidden if first else residual.add_(hidden)  # residual is ours from the last pair
                hidden = residual = None  # the last pair's output is spent: free it before the mixers run
                hidden, residual = self._lean_pair(forward_layer, backward_layer, r, first)
                del r
                if hidden_states is not None:
                    hidden_states.append(residual + hidden)
        elif self.config.use_layer_pairing:
            for forward_layer, backward_layer in zip(self.layers[0::2], self.layers[1::2]):
                h_fwd, r_fwd = forward_layer(hidden, residual)
                # The official code runs this layer on both streams flipped and flips its
                # results back; the mirrored block computes the same, copying nothing.
                h_bwd, r_bwd = backward_layer(hidden, residual, mirrored=True)
                hidden, residual = h_fwd + h_bwd, r_fwd + r_bwd
                if hidden_states is not None:  # the residual stream after this pair
                    hidden_states.append(residual + hidden)
        else:
            for layer in self.layers:
                hidden, residual = layer(hidden, residual)
                if hidden_states is not None:
                    hidden_states.append(residual + hidden)
        if residual is None:
            residual = hidden
        elif lean:  # the last pair's residual is ours: add in place, and let its output go
            residual = residual.add_(hidden)
        else:
            residual = residual + self.drop_path(hidden)
        del hidden
        out = self.norm_f(residual)
        del residual
        if self.config.use_double_final_norm:
            out = self.norm_f(out)
        return out


@register_family("mambaout", MambaOutConfig)
class MambaOut(SSAMBA):
    """The MambaOut ablation (Yu & Wang, 2024) of SSAMBA: the same encoder, blocks,
    quirks and recipes, with each mixer's selective scan removed
    (:class:`~ssamba.layers.GatedConvMixer`). Whatever SSAMBA gains over it on a task is
    what the SSM earns."""

    @staticmethod
    def make_mixer(config: MambaOutConfig) -> nn.Module:
        return GatedConvMixer(config.embed_dim, d_conv=config.d_conv, expand=config.expand,
                              bidirectional=config.use_bidirectional_mixer,
                              average_directions=config.use_direction_average)

    attention_units = 0

    def attention_maps(self, spec: Tensor, layers: list[int], channels: Sequence[int] = (),
                       absolute: bool = True) -> Iterator[tuple[str, Tensor, Tensor | None]]:
        raise ValueError("MambaOut has no SSM and no attention: its mixers are depthwise convs of "
                         f"{self.config.d_conv} taps, so there is no attention map to draw")


@register_preset
def ssamba_tiny() -> SSAMBAConfig:
    """SSAMBA-tiny: D=192, 24 layers, 16x16 patches (~6.9 M encoder parameters)."""
    return SSAMBAConfig(embed_dim=192)


@register_preset
def ssamba_small() -> SSAMBAConfig:
    """SSAMBA-small: D=384, 24 layers (~25.4 M)."""
    return SSAMBAConfig(embed_dim=384)


@register_preset
def ssamba_base() -> SSAMBAConfig:
    """SSAMBA-base: D=768, 24 layers (~96.7 M)."""
    return SSAMBAConfig(embed_dim=768)


@register_preset
def ssamba_test() -> SSAMBAConfig:
    """A tiny SSAMBA for tests: D=32, 4 layers, 64 frames (8x4 patch grid)."""
    return SSAMBAConfig(embed_dim=32, depth=4, input_tdim=64)


@register_preset
def mambaout_tiny() -> MambaOutConfig:
    """MambaOut-tiny: ssamba_tiny without the SSM (D=192, 24 layers, ~5.6 M)."""
    return MambaOutConfig(embed_dim=192)


@register_preset
def mambaout_test() -> MambaOutConfig:
    """A tiny MambaOut for tests: the geometry of ssamba_test (D=32, 4 layers, 64 frames)."""
    return MambaOutConfig(embed_dim=32, depth=4, input_tdim=64)
