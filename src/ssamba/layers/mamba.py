"""Bidirectional Mamba mixer ("bimamba v2", Vision Mamba) and its pre-norm residual block.

A mixer projects tokens ``(B, L, D)`` to an inner width ``Di = expand * D`` split into a
signal ``x`` and a gate ``z`` (one shared ``in_proj``), runs one selective SSM per
direction, and projects back with one shared ``out_proj``. Each direction owns its
depthwise conv, ``x_proj``, ``dt_proj``, ``A_log`` and ``D``.

The backward direction is the forward computation on the time-flipped sequence,
flipped back (Vision Mamba's "bimamba v2"). It is computed without flipped copies: its
conv looks ahead instead of back (the flipped kernel applied anti-causally, the same
numbers) and its scan runs with ``reverse=True``. Every tensor stays in the scan's
channel-major ``(B, Di, L)`` layout from ``in_proj`` to ``out_proj``, so no layout copies
are made either. ``tests/layers`` checks the mixer against the literal flip-based
definition.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import conv_cpu, scan_cpu, selective_scan, selective_scan_with_state
from .norms import DropPath, make_norm


def channel_matmul(weight: Tensor, x: Tensor) -> Tensor:
    """``weight (O, I) @ x (B, I, L) -> (B, O, L)``, contiguous: a per-token linear map in
    channel-major layout (``torch.matmul`` would compute the transpose and leave a
    strided result that the next op copies)."""
    return torch.bmm(weight.expand(x.shape[0], -1, -1), x)


def _autocast_operands(*tensors: Tensor) -> tuple[Tensor, ...]:
    """``tensors`` in the autocast dtype where autocast is on for their device: what
    autocast does for ``torch.bmm``, done before a custom autograd function, whose
    backward (run outside autocast) must find its saved tensors in one dtype."""
    device = tensors[0].device.type
    if not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    return tuple(t.to(dtype) for t in tensors)


class _InProjection(torch.autograd.Function):
    """``in_proj`` of tokens ``(B, L, D)`` into channel-major ``x, z (B, Di, L)`` with
    ``w_x, w_z (Di, D)``, whose backward gives the tokens' gradient contiguous ``(B, L, D)``
    (autograd's, through the transposed view, arrives strided and is copied by the norm's
    backward)."""

    @staticmethod
    def forward(ctx, hidden: Tensor, w_x: Tensor, w_z: Tensor):
        ctx.save_for_backward(hidden, w_x, w_z)
        tokens = hidden.transpose(1, 2)  # (B, D, L), a view
        return channel_matmul(w_x, tokens), channel_matmul(w_z, tokens)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_x: Tensor, g_z: Tensor):
        hidden, w_x, w_z = ctx.saved_tensors
        batch = hidden.shape[0]
        g_hidden = g_wx = g_wz = None
        if ctx.needs_input_grad[0]:  # (B, L, Di) @ (Di, D), both halves
            g_hidden = torch.bmm(g_x.transpose(1, 2), w_x.expand(batch, -1, -1))
            g_hidden.baddbmm_(g_z.transpose(1, 2), w_z.expand(batch, -1, -1))
        if ctx.needs_input_grad[1]:
            g_wx = torch.bmm(g_x, hidden).sum(0)  # sum_b (Di, L) @ (L, D)
        if ctx.needs_input_grad[2]:
            g_wz = torch.bmm(g_z, hidden).sum(0)
        return g_hidden, g_wx, g_wz


class _OutProjection(torch.autograd.Function):
    """``out_proj`` of channel-major ``y (B, Di, L)`` with ``weight (D, Di)`` into tokens
    ``(B, L, D)``, whose backward gives ``y``'s gradient contiguous ``(B, Di, L)``: the
    layout the scans' backward reads (autograd's arrives as a transposed view, which each
    of the two scans copied: most of the 220 ms a step that ``examples/step_profile.py``
    put in ``aten::copy_`` for ssamba_tiny at 10.24 s, batch 8)."""

    @staticmethod
    def forward(ctx, y: Tensor, weight: Tensor):
        ctx.save_for_backward(y, weight)
        return torch.bmm(y.transpose(1, 2), weight.t().expand(y.shape[0], -1, -1))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        y, weight = ctx.saved_tensors
        g_y = g_w = None
        if ctx.needs_input_grad[0]:  # (Di, D) @ (D, L) per batch element
            g_y = torch.bmm(weight.t().expand(y.shape[0], -1, -1), grad.transpose(1, 2))
        if ctx.needs_input_grad[1]:
            g_w = torch.bmm(grad.transpose(1, 2), y.transpose(1, 2)).sum(0)  # sum_b (D, L) @ (L, Di)
        return g_y, g_w


def depthwise_conv(x: Tensor, weight: Tensor, bias: Tensor | None, reverse: bool = False) -> Tensor:
    """Depthwise conv over time of ``x (B, C, L)`` with ``weight (C, 1, K)``: causal
    (``out[t] = sum_i w[i] x[t-K+1+i]``, what ``Conv1d(padding=K-1)`` gives in its first L
    outputs), or with ``reverse`` the causal conv of the time-flipped sequence, flipped
    back (``out[t] = sum_i w[i] x[t+K-1-i]``). K shifted multiply-adds: for Mamba's K = 4
    on CPU this is ~2x faster than the oneDNN depthwise convolution."""
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


class SelectiveSSM(nn.Module):
    """One scan direction: ``y = SSM(SiLU(conv(x))) * SiLU(z)``, shapes ``(B, Di, L)``."""

    def __init__(
        self,
        d_inner: int,
        d_state: int = 16,
        d_conv: int = 4,
        dt_rank: int = 12,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        device=None,
        dtype=None,
    ):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.d_state, self.dt_rank = d_state, dt_rank
        # Holds the depthwise conv's weight and bias under the official names (conv1d.weight,
        # conv1d.bias) and PyTorch's Conv1d initialisation; it is never called:
        # depthwise_conv / conv_silu apply the taps.
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, **kw)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False, **kw)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True, **kw)

        # Vim / Mamba initialisation: dt_proj weight ~ U(+-dt_rank^-0.5) and a bias whose
        # softplus is log-uniform in [dt_min, dt_max]; A = -[1..N] per channel; D = 1.
        with torch.no_grad():
            bound = dt_rank**-0.5
            self.dt_proj.weight.uniform_(-bound, bound)
            dt = torch.exp(
                torch.rand(d_inner, **kw) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            ).clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.dt_proj.bias._no_reinit = True
        a = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a))  # (Di, N)
        self.D = nn.Parameter(torch.ones(d_inner, device=device))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True

    def forward(self, x: Tensor, z: Tensor, scan_backend: str = "auto", reverse: bool = False) -> Tensor:
        """``x, z: (B, Di, L) -> (B, Di, L)``; ``reverse`` runs the direction from the last
        step to the first (equal to flipping ``x`` and ``z`` in time, running forward,
        and flipping the result back)."""
        x = self.conv_silu(x, reverse)
        return self.scan(x, channel_matmul(self.x_proj.weight, x), z, scan_backend, reverse)

    def conv_silu(self, x: Tensor, reverse: bool = False, channels: slice = slice(None)) -> Tensor:
        """``SiLU(conv(x))`` for the inner channels ``channels`` (``x`` holds only those)."""
        bias = self.conv1d.bias
        return conv_silu(x, self.conv1d.weight[channels], None if bias is None else bias[channels], reverse)

    def scan(self, x: Tensor, proj: Tensor, z: Tensor, scan_backend: str = "auto", reverse: bool = False,
             channels: slice = slice(None)) -> Tensor:
        """The SSM and gate over the conv output ``x`` of the inner channels ``channels``,
        given ``proj = x_proj(conv output)`` over all channels: ``(B, r + 2N, L)``."""
        return selective_scan(*self._scan_operands(x, proj, z, channels), delta_softplus=True,
                              backend=scan_backend, reverse=reverse)

    def scan_piece(self, x: Tensor, proj: Tensor, z: Tensor | None, reverse: bool,
                   state: Tensor | None) -> tuple[Tensor, Tensor]:
        """:meth:`scan` over all channels of one piece of a longer sequence, from the
        SSM state ``state`` that the pieces before it (in scan order) left; returns the
        output and the state after this piece (inference only)."""
        return selective_scan_with_state(*self._scan_operands(x, proj, z, slice(None)), delta_softplus=True,
                                         reverse=reverse, state=state)

    def _scan_operands(self, x: Tensor, proj: Tensor, z: Tensor | None, channels: slice):
        """``u, delta, A, B, C, D, z, delta_bias`` of the scan over ``channels``."""
        dt, b, c = proj.split([self.dt_rank, self.d_state, self.d_state], dim=1)  # (B, r / N / N, L)
        delta = channel_matmul(self.dt_proj.weight[channels], dt)  # (B, Di, L); the bias goes in the scan
        return (x, delta, -torch.exp(self.A_log.float()[channels]), b, c, self.D.float()[channels], z,
                self.dt_proj.bias.float()[channels])


class BiMambaMixer(nn.Module):
    """Token mixer ``(B, L, D) -> (B, L, D)``: shared projections, one SSM per direction.

    ``bidirectional=False`` gives a causal (forward-only) Mamba mixer. With
    ``average_directions`` (the official ``if_devide_out``) the two directions are
    averaged before ``out_proj``, otherwise summed.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        bidirectional: bool = True,
        average_directions: bool = True,
        scan_backend: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        d_inner = expand * d_model
        dt_rank = dt_rank or math.ceil(d_model / 16)
        self.bidirectional = bidirectional
        self.average_directions = average_directions
        self.scan_backend = scan_backend
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False, **kw)
        self.forward_ssm = SelectiveSSM(d_inner, d_state, d_conv, dt_rank, **kw)
        self.backward_ssm = SelectiveSSM(d_inner, d_state, d_conv, dt_rank, **kw) if bidirectional else None
        self.out_proj = nn.Linear(d_inner, d_model, bias=False, **kw)

    def forward(self, hidden: Tensor, mirrored: bool = False) -> Tensor:
        """``(B, L, D) -> (B, L, D)``; ``mirrored`` computes ``mixer(hidden.flip(1)).flip(1)``
        without flipping anything: each direction scans the other way (every other
        operation acts per token, so it commutes with the flip).

        Without autograd (``torch.no_grad`` / ``torch.inference_mode``) the lean path
        :meth:`forward_lean` computes the same with a fraction of the memory."""
        if not torch.is_grad_enabled():
            return self.forward_lean(hidden, mirrored)
        x, z = _InProjection.apply(*_autocast_operands(hidden, *self.in_proj.weight.chunk(2, dim=0)))  # (B, Di, L)
        y = self.forward_ssm(x, z, self.scan_backend, reverse=mirrored)
        weight = self.out_proj.weight
        if self.backward_ssm is not None:
            y = y + self.backward_ssm(x, z, self.scan_backend, reverse=not mirrored)
            if self.average_directions:
                weight = weight * 0.5  # (y_f + y_b) / 2 folded into the small weight
        return _OutProjection.apply(*_autocast_operands(y, weight))  # (B, L, D)

    def scan_operands(self, hidden: Tensor, mirrored: bool = False) -> list[tuple[str, bool, tuple]]:
        """What each direction's scan reads for the mixer input ``hidden (B, L, D)``:
        ``(name, reverse, (u, delta, A, B, C, D, z, delta_bias))`` per direction, as
        :meth:`forward` computes them (``ssamba explain`` turns them into attention maps)."""
        tokens = hidden.transpose(1, 2)
        w_x, w_z = self.in_proj.weight.chunk(2, dim=0)
        x, z = channel_matmul(w_x, tokens), channel_matmul(w_z, tokens)
        found = []
        for name, ssm, reverse in (("forward_ssm", self.forward_ssm, mirrored),
                                   ("backward_ssm", self.backward_ssm, not mirrored)):
            if ssm is not None:
                xc = ssm.conv_silu(x, reverse)
                found.append((name, reverse, ssm._scan_operands(xc, channel_matmul(ssm.x_proj.weight, xc), z,
                                                                slice(None))))
        return found

    #: Bytes of one (batch, channels, length) fp32 block below which :meth:`forward_lean`
    #: keeps all inner channels in one block; above, blocks of about this size. At 22k
    #: tokens (``ssamba bench model``, ssamba_tiny) 8 MiB blocks peaked at 184 MiB in
    #: 4.09 s, 4 MiB blocks at 188 MiB in 4.35 s.
    LEAN_BLOCK_BYTES = 8 * 2**20
    #: Narrowest block, so that a large batch does not cut the projections and scans
    #: into slivers (140 one-second clips in one batch would be blocks of 14 channels).
    LEAN_MIN_CHANNELS = 64
    #: Bytes of one ``(batch, Di, piece)`` fp32 tensor that sets the piece length of
    #: :meth:`forward_pieces`; inputs of more than one piece take that path.
    LEAN_PIECE_BYTES = 2 * 2**20
    #: Shortest piece, so that a large batch does not cut the sequence into slivers.
    LEAN_MIN_PIECE = 256
    #: Bytes that :meth:`forward_pieces` may keep between its two passes, in units of one
    #: ``(batch, Di, length)`` fp32 tensor: first the backward-running direction's outputs
    #: from the first pass (so that direction is scanned once, not twice, and its conv
    #: and projections are not computed again), then the ``x`` rows of ``in_proj`` that
    #: the first pass computed (so the second does not compute them again). At 22k tokens
    #: (ssamba_tiny, batch 1: 34 MB each) the outputs are kept (both, 64.4 MiB, would
    #: put the forward's peak near half of SSAST-SDPA's); an hour of audio (180k tokens,
    #: 276 MB each) keeps neither, so that memory stays independent of the length there.
    LEAN_REUSE_BYTES = 64 * 2**20

    def piece_length(self, batch: int) -> int:
        """Tokens per piece of :meth:`forward_pieces` for this batch size."""
        d_inner = self.out_proj.weight.shape[1]
        return max(self.LEAN_MIN_PIECE, self.LEAN_PIECE_BYTES // (4 * batch * d_inner))

    def _pieces_apply(self, hidden: Tensor) -> bool:
        """Whether :meth:`forward_lean` runs :meth:`forward_pieces`: more than one piece
        long, and the CPU kernel (which scans from a given state) is the scan, called
        eagerly (torch.compile / torch.export trace the channel-block path, whose scan is
        a registered operator)."""
        return (hidden.shape[1] > self.piece_length(hidden.shape[0]) and not torch.compiler.is_compiling()
                and self.scan_backend in ("auto", "cpu") and hidden.dtype != torch.float64
                and scan_cpu.is_available(hidden))

    def forward_lean(self, hidden: Tensor, mirrored: bool = False, out: Tensor | None = None,
                     norm: nn.Module | None = None) -> Tensor:
        """:meth:`forward` for inference, of ``norm(hidden)`` when a (per-token) ``norm``
        is given. Long inputs go through :meth:`forward_pieces` (memory independent of
        the length but for the input and output), others in inner-channel blocks: the
        peak is a few block-sized temporaries, not the seven full-width ``(B, Di, L)``
        tensors that autograd's path holds.

        A first pass over channel blocks computes each block's ``x`` rows of ``in_proj``
        and accumulates, per direction, ``x_proj``'s output (dt, B, C: the only quantity
        mixing channels). A second, per block, computes the block's ``x`` rows again and
        its ``z`` rows once for both directions, recomputes each direction's conv and
        SiLU (cheap, elementwise), runs the scans and adds their sum's share of
        ``out_proj`` to the output. One block (short inputs) computes ``x`` and the conv
        once. Equal to :meth:`forward` up to the order of the sums over blocks
        (``tests/layers``). With ``out`` (``(B, L, D)``) the result is added into it and
        ``out`` returned."""
        if self._pieces_apply(hidden):
            return self.forward_pieces(hidden, mirrored, out, norm)
        if norm is not None:
            hidden = norm(hidden)
        batch, length, _ = hidden.shape
        tokens = hidden.transpose(1, 2)  # (B, D, L), a view
        w_x, w_z = self.in_proj.weight.chunk(2, dim=0)
        d_inner = w_x.shape[0]
        nblocks = max(1, -(-batch * d_inner * length * 4 // self.LEAN_BLOCK_BYTES))
        size = max(-(-d_inner // nblocks), min(d_inner, self.LEAN_MIN_CHANNELS))
        blocks = [slice(i, min(i + size, d_inner)) for i in range(0, d_inner, size)]
        whole = channel_matmul(w_x, tokens) if len(blocks) == 1 else None  # (B, Di, L)

        def x_rows(blk: slice) -> Tensor:
            return whole if whole is not None else channel_matmul(w_x[blk], tokens)

        scale = 0.5 if self.backward_ssm is not None and self.average_directions else 1.0
        if out is None:
            out = hidden.new_zeros(batch, length, self.out_proj.weight.shape[0])
        directions = [(self.forward_ssm, mirrored)]
        if self.backward_ssm is not None:
            directions.append((self.backward_ssm, not mirrored))

        proj: list[Tensor | None] = [None] * len(directions)  # per direction: x_proj over all channels
        kept: list[Tensor | None] = [None] * len(directions)  # per direction (one block): the conv output
        for blk in blocks:
            x = x_rows(blk)
            for i, (ssm, reverse) in enumerate(directions):
                xc = ssm.conv_silu(x, reverse, blk)
                part = channel_matmul(ssm.x_proj.weight[:, blk], xc)  # (B, r + 2N, L)
                proj[i] = part if proj[i] is None else proj[i].add_(part)
                kept[i] = xc if whole is not None else None
            del x, xc
        for blk in blocks:
            x = x_rows(blk) if whole is None else None
            z = channel_matmul(w_z[blk], tokens)  # once per block, for both directions
            weight = (self.out_proj.weight[:, blk] * scale).t().expand(batch, -1, -1)  # (B, block, D)
            y_sum = None
            for i, (ssm, reverse) in enumerate(directions):
                xc = kept[i] if kept[i] is not None else ssm.conv_silu(x, reverse, blk)
                y = ssm.scan(xc, proj[i], z, self.scan_backend, reverse, blk)
                del xc
                y_sum = y if y_sum is None else y_sum.add_(y)
                del y
            del x, z
            out.baddbmm_(y_sum.transpose(1, 2), weight)  # one out_proj product for both directions
            del y_sum
        return out

    def forward_pieces(self, hidden: Tensor, mirrored: bool = False, out: Tensor | None = None,
                       norm: nn.Module | None = None) -> Tensor:
        """:meth:`forward_lean` along the sequence in pieces of :meth:`piece_length`
        tokens, each scan carrying its state from piece to piece: besides ``hidden`` and
        the output, memory holds a few piece-sized temporaries, whatever the length (and
        up to :attr:`LEAN_REUSE_BYTES` kept between the passes).

        Every operation but the scans and the conv acts per token. The conv reads its
        ``d_conv - 1`` neighbours across a piece's edge (each piece's window reaches that
        far into the next ones). A direction that runs forward in time carries its state
        from one piece to the next; one that runs backward needs the state entering each
        piece from the right, so a first pass walks the pieces from last to first. Where
        its outputs fit in :attr:`LEAN_REUSE_BYTES` the first pass keeps them, and the
        second pass, first to last, scans only the forward-running direction; otherwise
        the first pass keeps only the states and the second scans both directions.
        The scans run ungated: both directions share the gate ``SiLU(z)``, so their sum is
        gated once before the shared ``out_proj`` product. Equal to :meth:`forward` up to
        float rounding (``tests/layers``)."""
        batch, length, _ = hidden.shape
        piece = self.piece_length(batch)
        reach = self.forward_ssm.conv1d.weight.shape[-1] - 1
        edges = [(t0, min(t0 + piece, length)) for t0 in range(0, length, piece)]
        w_x, w_z = self.in_proj.weight.chunk(2, dim=0)
        scale = 0.5 if self.backward_ssm is not None and self.average_directions else 1.0
        weight_t = (self.out_proj.weight * scale).t()  # (Di, D)
        if out is None:
            out = hidden.new_zeros(batch, length, self.out_proj.weight.shape[0])
        directions = [(self.forward_ssm, mirrored)]
        if self.backward_ssm is not None:
            directions.append((self.backward_ssm, not mirrored))

        # What the budget keeps between the passes, each one (B, Di, L) tensor.
        full = 4 * batch * w_x.shape[0] * length
        has_reverse = any(reverse for _, reverse in directions)
        keep_outputs = has_reverse and full <= self.LEAN_REUSE_BYTES
        keep_rows = keep_outputs and 2 * full <= self.LEAN_REUSE_BYTES
        kept_rows: dict[int, Tensor] = {}  # piece index -> its window's x rows, from pass 1 for pass 2
        kept_outputs: dict[int, Tensor] = {}  # piece index -> the backward-running direction's output

        def window(k: int) -> tuple[Tensor, Tensor, int]:
            """The (normed) tokens of piece ``k`` and of the conv's reach on both sides
            ``(B, w, D)``, their ``x`` rows of in_proj ``(B, Di, w)`` (kept from pass 1
            where the budget allows), and the piece's offset in them."""
            t0, t1 = edges[k]
            lo, hi = max(0, t0 - reach), min(length, t1 + reach)
            tokens = hidden[:, lo:hi]
            if norm is not None:
                tokens = norm(tokens)
            x = kept_rows.pop(k, None)
            if x is None:
                x = channel_matmul(w_x, tokens.transpose(1, 2))
            return tokens, x, t0 - lo

        def scan(ssm: SelectiveSSM, x: Tensor, k: int, offset: int, reverse: bool,
                 state: Tensor | None) -> tuple[Tensor, Tensor]:
            """Piece ``k``'s ungated scan output ``(B, Di, piece)`` and the state after it."""
            size = edges[k][1] - edges[k][0]
            xc = ssm.conv_silu(x, reverse)[:, :, offset:offset + size].contiguous()
            return ssm.scan_piece(xc, channel_matmul(ssm.x_proj.weight, xc), None, reverse, state)

        # Pass 1, last piece to first, per backward-running direction: its outputs where
        # kept (every piece scanned), else the state entering each piece from the right
        # (the first piece needs no scan).
        entering: dict[int, list[Tensor | None]] = {}
        for i, (ssm, reverse) in enumerate(directions):
            if not reverse:
                continue
            states: list[Tensor | None] = [None] * len(edges)
            state = None
            for k in range(len(edges) - 1, -1 if keep_outputs else 0, -1):
                _, x, offset = window(k)
                if keep_rows:
                    kept_rows[k] = x
                if keep_outputs:
                    kept_outputs[k], state = scan(ssm, x, k, offset, True, state)
                else:
                    states[k] = state
                    _, state = scan(ssm, x, k, offset, True, state)
                del x
            if not keep_outputs:
                states[0] = state
                entering[i] = states
        # Pass 2, first piece to last: the directions not kept, their sum gated, out_proj.
        carried: list[Tensor | None] = [None] * len(directions)
        for k, (t0, t1) in enumerate(edges):
            tokens, x, offset = window(k)
            z = channel_matmul(w_z, tokens[:, offset:offset + t1 - t0].transpose(1, 2))  # the norm once per window
            del tokens
            y_sum = kept_outputs.pop(k, None)
            for i, (ssm, reverse) in enumerate(directions):
                if reverse and keep_outputs:
                    continue
                y, state = scan(ssm, x, k, offset, reverse, entering[i][k] if reverse else carried[i])
                if not reverse:
                    carried[i] = state
                y_sum = y if y_sum is None else y_sum.add_(y)
                del y
            del x
            y_sum.mul_(F.silu(z))
            del z
            out[:, t0:t1].baddbmm_(y_sum.transpose(1, 2), weight_t.expand(batch, -1, -1))
            del y_sum
        return out


class MambaBlock(nn.Module):
    """Vim's pre-norm block with a carried residual stream.

    ``residual = residual + drop_path(hidden)`` (or ``hidden`` for the first block),
    then ``hidden = mixer(norm(residual))``. Returns ``(hidden, residual)``. With
    ``mirrored`` the block computes what it would on both streams flipped in time, with
    both results flipped back (see :meth:`BiMambaMixer.forward`), copying nothing.
    """

    def __init__(self, dim: int, mixer: nn.Module, norm: str = "layernorm", norm_eps: float = 1e-5,
                 drop_path: float = 0.0, device=None, dtype=None):
        super().__init__()
        self.mixer = mixer
        self.norm = make_norm(norm, dim, norm_eps, device=device, dtype=dtype)
        self.drop_path = DropPath(drop_path)

    def forward(self, hidden: Tensor, residual: Tensor | None, mirrored: bool = False) -> tuple[Tensor, Tensor]:
        residual = hidden if residual is None else residual + self.drop_path(hidden)
        normed = self.norm(residual)
        return (self.mixer(normed, mirrored=True) if mirrored else self.mixer(normed)), residual
