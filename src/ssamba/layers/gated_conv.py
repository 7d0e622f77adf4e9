"""MambaOut's token mixer (Yu & Wang, 2024): the Mamba mixer with its SSM taken out.

What is left of :class:`~ssamba.layers.mamba.BiMambaMixer` is a gated CNN: one shared
``in_proj`` to a signal ``x`` and a gate ``z``, a depthwise conv and SiLU per direction
(causal forward, anti-causal backward, exactly the convs the SSAMBA mixer runs before its
scans), the directions averaged (or summed), gated by ``SiLU(z)``, and one shared
``out_proj``. A token sees only its ``d_conv - 1`` neighbours on each side per layer: the
long-range mixing is what the ablation takes away.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mamba import channel_matmul, conv_silu


class GatedConvMixer(nn.Module):
    """``(B, L, D) -> (B, L, D)``: ``out_proj(mean_dir(SiLU(conv_dir(x))) * SiLU(z))``.

    ``bidirectional=False`` keeps the causal conv only; ``average_directions`` averages the
    two directions (as SSAMBA's ``use_direction_average``), otherwise they are summed.
    """

    def __init__(self, d_model: int, d_conv: int = 4, expand: int = 2, bidirectional: bool = True,
                 average_directions: bool = True, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        d_inner = expand * d_model
        self.average_directions = average_directions
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False, **kw)
        # Conv1d holds the taps and PyTorch's initialisation; conv_silu applies them.
        self.forward_conv = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, **kw)
        self.backward_conv = (nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, **kw)
                              if bidirectional else None)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False, **kw)

    def forward(self, hidden: Tensor, mirrored: bool = False) -> Tensor:
        """``mirrored`` computes ``mixer(hidden.flip(1)).flip(1)`` (each conv runs the
        other way), as :meth:`BiMambaMixer.forward` does for layer pairing."""
        tokens = hidden.transpose(1, 2)  # (B, D, L), a view
        w_x, w_z = self.in_proj.weight.chunk(2, dim=0)
        x = channel_matmul(w_x, tokens)  # (B, Di, L)
        y = conv_silu(x, self.forward_conv.weight, self.forward_conv.bias, reverse=mirrored)
        weight = self.out_proj.weight
        if self.backward_conv is not None:
            y = y + conv_silu(x, self.backward_conv.weight, self.backward_conv.bias, reverse=not mirrored)
            if self.average_directions:
                weight = weight * 0.5
        del x
        y = y * F.silu(channel_matmul(w_z, tokens))
        return torch.bmm(y.transpose(1, 2), weight.t().expand(y.shape[0], -1, -1))  # (B, L, D)

    def infer(self, hidden: Tensor, mirrored: bool = False, out: Tensor | None = None,
              norm: nn.Module | None = None) -> Tensor:
        """The interface of :meth:`BiMambaMixer.infer` (the encoder's inference
        path): the mixer of ``norm(hidden)``, added into ``out`` when given."""
        y = self.forward(hidden if norm is None else norm(hidden), mirrored)
        return y if out is None else out.add_(y)
