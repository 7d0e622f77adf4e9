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

from ..ops import conv_silu, scan_carries_state, selective_scan, selective_scan_with_state
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
    of the two scans would copy; ``lab/step_profile.py`` shows such copies as
    ``aten::copy_``)."""

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
        return selective_scan(*self.operands(x, z, reverse), delta_softplus=True, backend=scan_backend,
                              reverse=reverse)

    def operands(self, x: Tensor, z: Tensor | None, reverse: bool = False,
                 window: slice | None = None) -> tuple[Tensor, ...]:
        """What the scan reads, ``(u, delta, A, B, C, D, z, delta_bias)``, for the
        ``in_proj`` signal rows ``x (B, Di, L)``: ``u = SiLU(conv(x))`` (cut to the time
        steps ``window`` when given, after the conv has read its neighbours), ``x_proj``'s
        ``dt, B, C`` of it and ``dt_proj(dt)``. The one formulation that training,
        inference and ``ssamba explain`` all scan."""
        bias = self.conv1d.bias
        u = conv_silu(x, self.conv1d.weight, bias, reverse)
        if window is not None:
            u = u[:, :, window].contiguous()
        dt, b, c = channel_matmul(self.x_proj.weight, u).split([self.dt_rank, self.d_state, self.d_state], dim=1)
        delta = channel_matmul(self.dt_proj.weight, dt)  # (B, Di, L); the bias goes in the scan
        return u, delta, -torch.exp(self.A_log.float()), b, c, self.D.float(), z, self.dt_proj.bias.float()


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

    def directions(self, mirrored: bool = False) -> list[tuple[str, SelectiveSSM, bool]]:
        """Each scan direction as ``(name, module, reverse)``; ``mirrored`` swaps which way
        each one runs (see :meth:`forward`)."""
        found = [("forward_ssm", self.forward_ssm, mirrored)]
        if self.backward_ssm is not None:
            found.append(("backward_ssm", self.backward_ssm, not mirrored))
        return found

    def _out_weight(self) -> Tensor:
        """``out_proj``'s weight, halved where the two directions are averaged: ``(y_f +
        y_b) / 2`` folded into the small weight."""
        weight = self.out_proj.weight
        return weight * 0.5 if self.backward_ssm is not None and self.average_directions else weight

    def forward(self, hidden: Tensor, mirrored: bool = False) -> Tensor:
        """``(B, L, D) -> (B, L, D)``; ``mirrored`` computes ``mixer(hidden.flip(1)).flip(1)``
        without flipping anything: each direction scans the other way (every other
        operation acts per token, so it commutes with the flip).

        This is the training path. Without autograd (``torch.no_grad`` /
        ``torch.inference_mode``) :meth:`infer` computes the same with a fraction of the
        memory."""
        if not torch.is_grad_enabled():
            return self.infer(hidden, mirrored)
        x, z = _InProjection.apply(*_autocast_operands(hidden, *self.in_proj.weight.chunk(2, dim=0)))  # (B, Di, L)
        y = None
        for _, ssm, reverse in self.directions(mirrored):
            y_dir = ssm(x, z, self.scan_backend, reverse)
            y = y_dir if y is None else y + y_dir
        return _OutProjection.apply(*_autocast_operands(y, self._out_weight()))  # (B, L, D)

    def scan_operands(self, hidden: Tensor, mirrored: bool = False) -> list[tuple[str, bool, tuple]]:
        """What each direction's scan reads for the mixer input ``hidden (B, L, D)``:
        ``(name, reverse, (u, delta, A, B, C, D, z, delta_bias))`` per direction, from
        :meth:`SelectiveSSM.operands` as both paths compute them (``hidden_attention``
        turns them into attention maps)."""
        tokens = hidden.transpose(1, 2)
        w_x, w_z = self.in_proj.weight.chunk(2, dim=0)
        x, z = channel_matmul(w_x, tokens), channel_matmul(w_z, tokens)
        return [(name, reverse, ssm.operands(x, z, reverse)) for name, ssm, reverse in self.directions(mirrored)]

    #: Bytes of one ``(rows, Di, piece)`` fp32 tensor, the unit of :meth:`infer`'s work:
    #: its peak memory is a few such tiles besides the input and output, whatever the
    #: batch and length. The piece size that the sequence pieces were measured with
    #: (docs/performance.md, "Inference at length"): smaller tiles add per-call overhead,
    #: larger ones hold more memory.
    TILE_BYTES = 2 * 2**20
    #: Shortest piece along the sequence, so that a large batch does not cut it into
    #: slivers: a tile then holds fewer batch rows instead.
    MIN_PIECE = 256
    #: Bytes that :meth:`infer` may keep between its two passes over a tile's pieces, in
    #: units of one ``(rows, Di, length)`` fp32 tensor: first the backward-running
    #: direction's outputs from the first pass (so that direction is scanned once, not
    #: twice), then the ``x`` rows of ``in_proj`` that the first pass computed. Beyond it,
    #: memory stays independent of the length (an hour of audio keeps neither).
    REUSE_BYTES = 64 * 2**20

    def tile(self, batch: int, length: int, carries_state: bool = True) -> tuple[int, int]:
        """``(rows, piece)``: batch rows and sequence length of one tile of :meth:`infer`.
        The whole batch in pieces of at least :attr:`MIN_PIECE` tokens where that fits
        :attr:`TILE_BYTES`, else fewer rows; without a scan that carries a state from
        piece to piece, one piece of the whole length."""
        d_inner = self.out_proj.weight.shape[1]
        piece = max(self.MIN_PIECE, self.TILE_BYTES // (4 * batch * d_inner)) if carries_state else length
        rows = min(batch, max(1, self.TILE_BYTES // (4 * d_inner * min(piece, length))))
        if carries_state and rows < batch:
            piece = max(self.MIN_PIECE, self.TILE_BYTES // (4 * rows * d_inner))
        return rows, min(piece, length)

    def infer(self, hidden: Tensor, mirrored: bool = False, out: Tensor | None = None,
              norm: nn.Module | None = None) -> Tensor:
        """The inference path: :meth:`forward` of ``norm(hidden)`` (``norm`` per token,
        optional), without autograd, in tiles of :meth:`tile` batch rows and sequence
        pieces, each scan carrying its state from piece to piece where the backend can
        (:func:`ssamba.ops.scan_carries_state`). Besides the input and output, memory
        holds a few tile-sized temporaries (and up to :attr:`REUSE_BYTES` between passes),
        not the seven full-width ``(B, Di, L)`` tensors of autograd's path. With ``out``
        (``(B, L, D)``) the result is added into it and ``out`` returned. Equal to
        :meth:`forward` up to float rounding (``tests/layers``)."""
        batch, length, _ = hidden.shape
        if out is None:
            out = hidden.new_zeros(batch, length, self.out_proj.weight.shape[0])
        carries = scan_carries_state(self.scan_backend, hidden)
        rows, piece = self.tile(batch, length, carries)
        for b0 in range(0, batch, rows):
            _Pieces(self, hidden[b0:b0 + rows], norm, mirrored, piece).run(out[b0:b0 + rows])
        return out


class _Pieces:
    """One tile of :meth:`BiMambaMixer.infer`: some batch rows, along the sequence in
    pieces.

    Every operation but the scans and the conv acts per token. The conv reads its
    ``d_conv - 1`` neighbours across a piece's edge (each piece's window reaches that far
    into the next ones). A direction that runs forward in time carries its state from one
    piece to the next; one that runs backward needs the state entering each piece from
    the right, so a first pass walks the pieces from last to first. Where its outputs fit
    in :attr:`BiMambaMixer.REUSE_BYTES` the first pass keeps them, and the second pass,
    first to last, scans only the forward-running direction; otherwise the first pass
    keeps only the states and the second scans both directions. The scans run ungated:
    both directions share the gate ``SiLU(z)``, so their sum is gated once before the
    shared ``out_proj`` product."""

    def __init__(self, mixer: BiMambaMixer, hidden: Tensor, norm: nn.Module | None, mirrored: bool, piece: int):
        self.mixer, self.hidden, self.norm = mixer, hidden, norm
        batch, length, _ = hidden.shape
        self.edges = [(t0, min(t0 + piece, length)) for t0 in range(0, length, piece)]
        self.reach = mixer.forward_ssm.conv1d.weight.shape[-1] - 1
        self.w_x, self.w_z = mixer.in_proj.weight.chunk(2, dim=0)
        self.directions = [(ssm, reverse) for _, ssm, reverse in mixer.directions(mirrored)]
        full = 4 * batch * self.w_x.shape[0] * length  # bytes of one (rows, Di, L) tensor
        has_reverse = any(reverse for _, reverse in self.directions)
        self.keep_outputs = has_reverse and full <= mixer.REUSE_BYTES
        self.keep_rows = self.keep_outputs and 2 * full <= mixer.REUSE_BYTES
        self.kept_rows: dict[int, Tensor] = {}  # piece index -> its window's x rows, from pass 1 for pass 2
        self.kept_outputs: dict[int, Tensor] = {}  # piece index -> the backward-running direction's output
        self.entering: dict[int, list[Tensor | None]] = {}  # direction -> state entering each piece

    def window(self, k: int) -> tuple[Tensor, Tensor, int]:
        """The (normed) tokens of piece ``k`` and of the conv's reach on both sides
        ``(B, w, D)``, their ``x`` rows of in_proj ``(B, Di, w)`` (kept from pass 1 where
        the budget allows), and the piece's offset in them."""
        t0, t1 = self.edges[k]
        lo, hi = max(0, t0 - self.reach), min(self.hidden.shape[1], t1 + self.reach)
        tokens = self.hidden[:, lo:hi]
        if self.norm is not None:
            tokens = self.norm(tokens)
        x = self.kept_rows.pop(k, None)
        if x is None:
            x = channel_matmul(self.w_x, tokens.transpose(1, 2))
        return tokens, x, t0 - lo

    def scan(self, ssm: SelectiveSSM, x: Tensor, k: int, offset: int, reverse: bool,
             state: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Piece ``k``'s ungated scan output ``(B, Di, piece)`` and the state after it."""
        t0, t1 = self.edges[k]
        operands = ssm.operands(x, None, reverse, slice(offset, offset + t1 - t0))
        if len(self.edges) == 1:  # nothing to carry: the plain scan (also what tracing sees)
            return selective_scan(*operands, delta_softplus=True, backend=self.mixer.scan_backend,
                                  reverse=reverse), None
        return selective_scan_with_state(*operands, delta_softplus=True, reverse=reverse, state=state,
                                         backend=self.mixer.scan_backend)

    def first_pass(self) -> None:
        """Last piece to first, per backward-running direction: its outputs where kept
        (every piece scanned), else the state entering each piece from the right (the
        first piece needs no scan)."""
        for i, (ssm, reverse) in enumerate(self.directions):
            if not reverse:
                continue
            states: list[Tensor | None] = [None] * len(self.edges)
            state = None
            for k in range(len(self.edges) - 1, -1 if self.keep_outputs else 0, -1):
                _, x, offset = self.window(k)
                if self.keep_rows:
                    self.kept_rows[k] = x
                if self.keep_outputs:
                    self.kept_outputs[k], state = self.scan(ssm, x, k, offset, True, state)
                else:
                    states[k] = state
                    _, state = self.scan(ssm, x, k, offset, True, state)
                del x
            if not self.keep_outputs:
                states[0] = state
                self.entering[i] = states

    def run(self, out: Tensor) -> None:
        """Add the mixer's output for these rows into ``out (rows, L, D)``: the first
        pass, then first piece to last the directions not kept, their sum gated, and
        out_proj."""
        self.first_pass()
        batch = self.hidden.shape[0]
        weight_t = self.mixer._out_weight().t().expand(batch, -1, -1)  # (B, Di, D)
        carried: list[Tensor | None] = [None] * len(self.directions)
        for k, (t0, t1) in enumerate(self.edges):
            tokens, x, offset = self.window(k)
            z = channel_matmul(self.w_z, tokens[:, offset:offset + t1 - t0].transpose(1, 2))  # the norm once per window
            del tokens
            y_sum = self.kept_outputs.pop(k, None)
            for i, (ssm, reverse) in enumerate(self.directions):
                if reverse and self.keep_outputs:
                    continue
                state = self.entering[i][k] if reverse else carried[i]
                y, state = self.scan(ssm, x, k, offset, reverse, state)
                if not reverse:
                    carried[i] = state
                y_sum = y if y_sum is None else y_sum.add_(y)
                del y
            del x
            y_sum.mul_(F.silu(z))
            del z
            out[:, t0:t1].baddbmm_(y_sum.transpose(1, 2), weight_t)
            del y_sum


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
