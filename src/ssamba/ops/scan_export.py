"""Exportable selective scan: the recurrence as PyTorch's ``scan`` higher-order operator.

The fused CPU kernel is opaque to exporters and the reference is a Python loop that a
trace would unroll to a fixed length. Here the recurrence of
:mod:`ssamba.ops.scan_reference` is one step function handed to
``torch._higher_order_ops.scan``, which ``torch.export`` keeps as a loop over time and
``torch.onnx.export`` turns into an ONNX ``Scan`` (with ``reverse`` as its direction):
the sequence length stays a dynamic axis. Per step it holds a ``(B, D, N)`` state and
computes ``exp(dt * A)`` from that step's ``dt``, so no ``(B, D, L, N)`` tensor is made.

It is the ``export`` backend: never chosen by ``auto``, selected by
``scan_backend="export"`` (``ssamba export`` does so). Eager, it is slower than the
reference; its purpose is the graph.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .scan_reference import discretisation_inputs, skip_and_gate


def selective_scan_export(
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
) -> Tensor:
    """Same contract as :func:`~ssamba.ops.scan_reference.selective_scan_reference`."""
    from torch._higher_order_ops.scan import scan

    out_dtype = u.dtype
    u, delta, A, B, C = discretisation_inputs(u, delta, A, B, C, delta_bias, delta_softplus)
    steps = (delta.permute(2, 0, 1), (delta * u).permute(2, 0, 1), B.permute(2, 0, 1), C.permute(2, 0, 1))

    def step(state: Tensor, inputs: tuple[Tensor, Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        dt, dtu, b, c = inputs  # (B, D), (B, D), (B, N), (B, N)
        state = torch.exp(dt.unsqueeze(-1) * A) * state + dtu.unsqueeze(-1) * b.unsqueeze(1)
        return state, (state * c.unsqueeze(1)).sum(-1)

    init = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])  # (B, D, N)
    _, ys = scan(step, init, steps, dim=0, reverse=reverse)  # ys: (L, B, D)
    return skip_and_gate(ys.permute(1, 2, 0), u, D, z).to(out_dtype)
