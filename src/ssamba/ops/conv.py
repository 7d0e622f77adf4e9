"""SiLU(depthwise conv over time): the short conv before each Mamba scan, as one op.

:func:`conv_silu` computes ``SiLU(depthwise_conv(x, weight, bias, reverse))`` with a
hand-written backward: in the C++ kernel of :mod:`ssamba.ops.conv_cpu` for fp32 CPU
tensors where it builds, else in PyTorch operations (:func:`depthwise_conv` and
:func:`conv_silu_backward_reference`), which are the kernel's oracle
(``tests/ops/test_conv_cpu.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import conv_cpu

__all__ = ["conv_silu", "conv_silu_backward_reference", "depthwise_conv"]


def depthwise_conv(x: Tensor, weight: Tensor, bias: Tensor | None, reverse: bool = False) -> Tensor:
    """Depthwise conv over time of ``x (B, C, L)`` with ``weight (C, 1, K)``: causal
    (``out[t] = sum_i w[i] x[t-K+1+i]``, what ``Conv1d(padding=K-1)`` gives in its first L
    outputs), or with ``reverse`` the causal conv of the time-flipped sequence, flipped
    back (``out[t] = sum_i w[i] x[t+K-1-i]``). K shifted multiply-adds, which for Mamba's
    K = 4 beat the oneDNN depthwise convolution on CPU (docs/performance.md)."""
    k, length = weight.shape[-1], x.shape[-1]
    w = weight[:, 0, :, None]  # (C, K, 1)
    # The last tap sees x[t] itself and spans the whole output; tap i is shifted by
    # s = K-1-i steps and reaches s outputs less (zero padding, without a padded copy).
    out = x * w[:, k - 1] if bias is None else torch.addcmul(bias[:, None], w[:, k - 1], x)
    for i in range(k - 1):
        s = k - 1 - i
        if s >= length:
            continue
        if reverse:  # out[t] += w[i] x[t + s]
            out[..., : length - s].addcmul_(w[:, i], x[..., s:])
        else:  # out[t] += w[i] x[t - s]
            out[..., s:].addcmul_(w[:, i], x[..., : length - s])
    return out


class _ConvSiLU(torch.autograd.Function):
    """``SiLU(depthwise_conv(x))`` with a hand-written backward.

    On fp32 CPU tensors both directions run in the C++ kernel of
    :mod:`ssamba.ops.conv_cpu` (one pass forward, the pre-activation recomputed in the
    backward). Elsewhere they are PyTorch operations: autograd through
    :func:`depthwise_conv`'s in-place tap updates on slices would record one
    copy-and-slice node per tap, each building a zero-filled full-size gradient, so the
    backward is three kinds of full-width operations instead: SiLU's derivative, the
    transposed conv (the same conv run the other way in time: the transpose of a causal
    conv is the anti-causal one with the same taps) and one multiply-and-sum per tap for
    the weights. That formulation is the kernel's oracle (``tests/ops/test_conv_cpu.py``)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, reverse: bool) -> Tensor:
        ctx.reverse, ctx.has_bias = reverse, bias is not None
        ctx.kernel = conv_cpu.is_available(x, weight, bias)
        if ctx.kernel:
            ctx.save_for_backward(x, weight, bias)
            return conv_cpu.conv_silu_forward(x, weight, bias, reverse)
        pre = depthwise_conv(x, weight, bias, reverse)
        ctx.save_for_backward(x, weight, pre)
        return F.silu(pre)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        if ctx.kernel:
            x, weight, bias = ctx.saved_tensors
            grad_x, grad_w, grad_b = conv_cpu.conv_silu_backward(grad, x, weight, bias, ctx.reverse,
                                                                 *ctx.needs_input_grad[:3])
            return grad_x, grad_w, grad_b, None
        x, weight, pre = ctx.saved_tensors
        return (*conv_silu_backward_reference(grad, x, weight, pre, ctx.reverse, ctx.has_bias,
                                              ctx.needs_input_grad[:3]), None)


def conv_silu_backward_reference(grad: Tensor, x: Tensor, weight: Tensor, pre: Tensor, reverse: bool,
                                 has_bias: bool, needs: tuple[bool, bool, bool] = (True, True, True)):
    """Gradients ``(x, weight, bias)`` of ``SiLU(depthwise_conv(x, weight, bias, reverse))``
    in PyTorch operations, given ``grad`` and the pre-activation ``pre``."""
    k, length = weight.shape[-1], x.shape[-1]
    g = torch.ops.aten.silu_backward(grad, pre)  # d/d(pre)
    grad_x = depthwise_conv(g, weight, None, not reverse) if needs[0] else None
    grad_w = grad_b = None
    if needs[1]:
        taps = []
        for i in range(k):
            s = k - 1 - i  # tap i reads x[t - s] (x[t + s] reversed)
            if s >= length:
                taps.append(g.new_zeros(g.shape[1]))
            elif reverse:
                taps.append((g[..., : length - s] * x[..., s:]).sum((0, 2)))
            else:
                taps.append((g[..., s:] * x[..., : length - s]).sum((0, 2)))
        grad_w = torch.stack(taps, dim=1).unsqueeze(1).to(weight.dtype)  # (C, 1, K)
    if has_bias and needs[2]:
        grad_b = g.sum((0, 2))
    return grad_x, grad_w, grad_b


def conv_silu(x: Tensor, weight: Tensor, bias: Tensor | None, reverse: bool = False) -> Tensor:
    """``SiLU(depthwise_conv(x, weight, bias, reverse))``; through :class:`_ConvSiLU` when a
    gradient is needed, else in the CPU kernel where it runs."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return _ConvSiLU.apply(x, weight, bias, reverse)
    if conv_cpu.is_available(x, weight, bias):
        return conv_cpu.conv_silu_forward(x, weight, bias, reverse)
    return F.silu(depthwise_conv(x, weight, bias, reverse))
