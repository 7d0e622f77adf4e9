"""Reference selective scan: the readable oracle for every fast backend.

The recurrence of a selective state space model (Mamba, Gu & Dao 2023), per batch
element b, channel d and state index n::

    dt[t]     = softplus(delta[t] + delta_bias)        (each optional)
    h[t, n]   = exp(dt[t] * A[n]) * h[t-1, n] + dt[t] * B[n, t] * u[t]
    y[t]      = sum_n C[n, t] * h[t, n] + D * u[t]
    out[t]    = y[t] * silu(z[t])                       (if z is given)

With ``reverse=True`` the recurrence runs from the last step to the first, i.e. the
result is ``flip(scan(flip(inputs)))`` along L: the backward direction of a
bidirectional layer, without the caller flipping anything. That identity is this
oracle's definition of ``reverse``; fast backends implement it natively.

Shapes follow mamba-ssm: ``u, delta, z: (B, D, L)``, ``A: (D, N)``,
``B, C: (B, N, L)``, ``D, delta_bias: (D,)``.

This loop is written for clarity, not speed. Its autograd graph stays linear in L
because the per-step tensors are produced by one ``unbind`` rather than by indexing
a (B, D, L, N) tensor step by step (indexing makes the backward quadratic in L).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def scan_reversed_by_flipping(scan, u, delta, A, B, C, D=None, z=None, delta_bias=None,
                              delta_softplus=False, **state):
    """``reverse=True`` by definition: ``scan`` (a forward-only scan with the reference's
    signature) on the time-flipped operands, flipped back. For backends without a native
    reverse scan. ``state`` keywords pass through (the state is per channel, not per step)."""
    u, delta, B, C = (t.flip(-1) for t in (u, delta, B, C))
    z = None if z is None else z.flip(-1)
    result = scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, **state)
    if isinstance(result, tuple):
        return result[0].flip(-1), result[1]
    return result.flip(-1)


def selective_scan_reference(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    reverse: bool = False,
    *,
    initial_state: Tensor | None = None,
    return_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Run the selective scan step by step; returns ``(B, D, L)`` in ``u.dtype``.

    Computes in fp32 (fp64 when ``u`` is fp64, so that ``gradcheck`` can use it).
    ``initial_state`` ``(B, D, N)`` is the state before the first step (zeros if None);
    with ``return_state`` the result is ``(out, state after the last step)``, so that a
    long sequence can be scanned in consecutive pieces.
    """
    if reverse:
        return scan_reversed_by_flipping(selective_scan_reference, u, delta, A, B, C, D, z, delta_bias,
                                         delta_softplus, initial_state=initial_state, return_state=return_state)
    out_dtype = u.dtype
    u, delta, A, B, C = discretisation_inputs(u, delta, A, B, C, delta_bias, delta_softplus)

    batch, channels, _ = u.shape
    state = u.new_zeros(batch, channels, A.shape[1]) if initial_state is None else initial_state.to(u.dtype)
    decay = torch.exp(delta.unsqueeze(-1) * A[:, None, :])  # (B, D, L, N)
    drive = (delta * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)  # (B, D, L, N)
    readout = C.transpose(1, 2)  # (B, L, N)

    ys = []
    for a_t, bu_t, c_t in zip(decay.unbind(2), drive.unbind(2), readout.unbind(1)):
        state = a_t * state + bu_t
        ys.append(torch.einsum("bdn,bn->bd", state, c_t))
    y = torch.stack(ys, dim=-1)  # (B, D, L)
    out = skip_and_gate(y, u, D, z).to(out_dtype)
    return (out, state) if return_state else out


def discretisation_inputs(u, delta, A, B, C, delta_bias=None, delta_softplus=False):
    """``u, dt, A, B, C`` in the compute dtype (fp32, or fp64 for fp64 ``u``), with
    ``dt = softplus(delta + delta_bias)`` (each optional): what every step reads."""
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A, B, C = (t.to(compute) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return u, delta, A, B, C


def skip_and_gate(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    """``(y + D u) * silu(z)`` (each optional) in ``y``'s dtype."""
    if D is not None:
        y = y + u * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y
