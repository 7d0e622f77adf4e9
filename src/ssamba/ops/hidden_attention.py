"""The hidden attention of a selective scan (Ali, Zimerman & Wolf, 2024).

Unrolled, the recurrence of :func:`~ssamba.ops.selective_scan_reference` is a linear map
of its input: for channel d, output step t and source step s <= t::

    alpha_d[t, s] = sum_n C[n, t] * exp(A[d, n] * (dt_{s+1} + ... + dt_t)[d]) * dt_s[d] * B[n, s]

so that ``y_t[d] = sum_s alpha_d[t, s] u_s[d] + D_d u_t[d]`` before the gate. With
``reverse=True`` the scan runs from the last step to the first, and alpha is the
anti-causal matrix of the flipped sequence, flipped back (s >= t).

The maps are ``L x L`` per channel; they are computed in row blocks of ``CHUNK`` output
steps, reduced over channels as they go (the mean, of magnitudes by default), keeping the
per-channel matrices only of the channels asked for. Within a block the products of
decays are taken directly; for the sources before it, the decay from s to t is split at
the block's first step r, ``exp(A (S_t - S_r)) * exp(A (S_r - S_s))`` with ``S`` the
running sum of dt, so that each block is one batched matrix product over the state
index (both factors are at most 1: nothing overflows), as in chunked SSM algorithms.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .scan_reference import discretisation_inputs

#: Output steps per row block.
CHUNK = 32
#: Elements of one ``(batch, channels, CHUNK, L)`` block; a few such temporaries live at once.
BLOCK_ELEMENTS = 1 << 23


def hidden_attention(
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    reverse: bool = False,
    *,
    absolute: bool = True,
    channels: Sequence[int] = (),
) -> tuple[Tensor, Tensor | None]:
    """The scan's attention matrices, in the reference scan's shapes (``delta (B, D, L)``,
    ``A (D, N)``, ``B, C (B, N, L)``, ``delta_bias (D,)``).

    Returns ``(mean, per_channel)``: the mean over the D channels of ``|alpha_d|``
    (``absolute``; else of ``alpha_d``), ``(B, L, L)`` indexed ``[output, source]``, and
    ``alpha_d`` of the listed ``channels`` ``(B, len(channels), L, L)`` (None if none),
    both in the compute dtype (fp32; fp64 for fp64 ``delta``).
    """
    if delta.dim() != 3 or B.shape != C.shape or B.dim() != 3 or A.shape != (delta.shape[1], B.shape[1]):
        raise ValueError(f"shapes delta {tuple(delta.shape)}, A {tuple(A.shape)}, B {tuple(B.shape)}, "
                         f"C {tuple(C.shape)} are not (B, D, L), (D, N), (B, N, L), (B, N, L)")
    channels = list(channels)
    if any(not 0 <= c < delta.shape[1] for c in channels):
        raise ValueError(f"channels {channels} out of range for {delta.shape[1]} channels")
    # delta stands in for u, which the maps do not need (it only sets the compute dtype)
    _, dt, A, B, C = discretisation_inputs(delta, delta, A, B, C, delta_bias, delta_softplus)
    if reverse:  # the causal matrix of the flipped sequence, flipped back below
        dt, B, C = dt.flip(-1), B.flip(-1), C.flip(-1)
    batch, d_inner, length = dt.shape
    cum = dt.cumsum(-1)  # (B, D, L): S_t = dt_0 + ... + dt_t
    drive = (dt.unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1))  # (B, D, L, N): dt_s B_s
    readout = C.transpose(1, 2).unsqueeze(1)  # (B, 1, L, N)
    a = A[None, :, None, :]  # (1, D, 1, N)
    mean = dt.new_zeros(batch, length, length)
    kept = dt.new_zeros(batch, len(channels), length, length) if channels else None
    wanted = torch.tensor(channels, dtype=torch.long, device=dt.device)
    step = max(1, BLOCK_ELEMENTS // (batch * CHUNK * length))
    for c0 in range(0, d_inner, step):
        ch = slice(c0, min(d_inner, c0 + step))
        for t0 in range(0, length, CHUNK):
            t1 = min(length, t0 + CHUNK)
            here = cum[:, ch, t0:t1]  # (B, c, q)
            # sources in the block: exp(A (S_t - S_s)) directly, s <= t
            span = (here[..., :, None] - here[..., None, :]).clamp_min(0)  # (B, c, q, q)
            decay = torch.exp(span.unsqueeze(-1) * a[:, ch, None])  # (B, c, q, q, N)
            block = (decay * readout[:, :, t0:t1, None] * drive[:, ch, None, t0:t1]).sum(-1)
            block = block.tril()
            if t0:  # sources before it, through r = t0 - 1
                r = cum[:, ch, t0 - 1, None, None]  # (B, c, 1, 1)
                q = readout[:, :, t0:t1] * torch.exp(a[:, ch] * (here.unsqueeze(-1) - r))  # (B, c, q, N)
                k = drive[:, ch, :t0] * torch.exp(a[:, ch] * (r - cum[:, ch, :t0, None]))  # (B, c, t0, N)
                block = torch.cat([q @ k.transpose(-1, -2), block], dim=-1)  # (B, c, q, t1)
            mean[:, t0:t1, :t1] += (block.abs() if absolute else block).sum(1)
            if channels:
                inside = (wanted >= ch.start) & (wanted < ch.stop)
                if inside.any():
                    kept[:, inside, t0:t1, :t1] = block[:, wanted[inside] - ch.start]
    mean /= d_inner
    if reverse:
        mean = mean.flip(-1, -2)
        kept = None if kept is None else kept.flip(-1, -2)
    return mean, kept


def apply_hidden_attention(alpha: Tensor, u: Tensor, D: Tensor | None = None) -> Tensor:
    """``y_t[d] = sum_s alpha_d[t, s] u_s[d] + D_d u_t[d]``: per-channel maps
    ``(B, D, L, L)`` applied to ``u (B, D, L)`` (the scan's output before the gate)."""
    y = torch.einsum("bdts,bds->bdt", alpha, u.to(alpha.dtype))
    return y if D is None else y + u.to(alpha.dtype) * D.to(alpha.dtype)[:, None]
