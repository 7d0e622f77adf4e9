"""The Triton kernels of the "triton" scan backend (:mod:`ssamba.ops.scan_triton`).

Imported on first use only, since importing Triton is slow and it is absent from CPU
installs. Triton decides when it is imported whether kernels compile for the GPU or run
in its interpreter on CPU tensors (``TRITON_INTERPRET=1``, which the tests set).

One program scans ``BLOCK_D`` channels of one batch element through all ``L`` steps,
holding their ``(BLOCK_D, BLOCK_N)`` states in registers, in fp32 whatever the inputs'
dtype. The step ``s`` of the scan is the time index ``s``, or ``L - 1 - s`` with
``REVERSE``: the backward direction of a bidirectional layer reads its operands where
they lie, without flipped copies.

Memory: the forward keeps the state before every ``CHUNK`` steps (``L / CHUNK`` states per
channel). The backward walks the chunks from the last: it recomputes a chunk's states
from its checkpoint into a scratch buffer of ``CHUNK`` states per channel, then runs the
adjoint recurrence back through the chunk.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _softplus(x):
    # torch's softplus (threshold 20), with log1p(e) for small e = exp(-|x|) written out
    e = tl.exp(-tl.abs(x))
    log1p = tl.where(e < 1e-4, e * (1.0 - e * (0.5 - e / 3.0)), tl.log(1.0 + e))
    return tl.where(x > 20.0, x, tl.maximum(x, 0.0) + log1p)


@triton.jit
def _step_inputs(u_row, delta_row, b_row, c_row, t, bias, dmask, nmask,
                 HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """``u, pre-activation of dt, dt`` (per channel) and ``B, C`` (per state) at time ``t``."""
    u = tl.load(u_row + t, mask=dmask, other=0.0).to(tl.float32)
    x = tl.load(delta_row + t, mask=dmask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        x = x + bias
    if SOFTPLUS:
        dt = _softplus(x)
    else:
        dt = x
    b = tl.load(b_row + t, mask=nmask, other=0.0).to(tl.float32)
    c = tl.load(c_row + t, mask=nmask, other=0.0).to(tl.float32)
    return u, x, dt, b, c


@triton.jit
def _program_operands(a_ptr, d_ptr, bias_ptr, pid_b, pid_d, L, DIM, N, NCHUNKS,
                      HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """What both kernels start from for their ``BLOCK_D`` channels of batch element
    ``pid_b``: indices and masks, ``A``, ``delta_bias`` and ``D`` in fp32, and the offsets of
    the channels' rows (u, delta, z, out), the states' rows (B, C) and the checkpoints."""
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    dmask = d < DIM
    nmask = n < N
    tile_mask = dmask[:, None] & nmask[None, :]
    a = tl.load(a_ptr + d[:, None] * N + n[None, :], mask=tile_mask, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + d, mask=dmask, other=0.0).to(tl.float32) if HAS_BIAS else tl.zeros([BLOCK_D], tl.float32)
    skip = tl.load(d_ptr + d, mask=dmask, other=0.0).to(tl.float32) if HAS_D else tl.zeros([BLOCK_D], tl.float32)
    row = (pid_b * DIM + d) * L
    state_row = (pid_b * N + n) * L
    ckpt_tile = ((pid_b * DIM + d[:, None]) * NCHUNKS) * BLOCK_N + n[None, :]
    return d, n, dmask, nmask, tile_mask, a, bias, skip, row, state_row, ckpt_tile


@triton.jit
def scan_fwd_kernel(u_ptr, delta_ptr, a_ptr, b_ptr, c_ptr, d_ptr, z_ptr, bias_ptr, out_ptr, ckpt_ptr,
                    L, DIM, N, NCHUNKS,
                    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                    REVERSE: tl.constexpr, SAVE: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr):
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    d, n, dmask, nmask, tile_mask, a, bias, skip, row, state_row, ckpt_tile = _program_operands(
        a_ptr, d_ptr, bias_ptr, pid_b, pid_d, L, DIM, N, NCHUNKS, HAS_D, HAS_BIAS, BLOCK_D, BLOCK_N)
    h = tl.zeros([BLOCK_D, BLOCK_N], tl.float32)
    for chunk in range(0, NCHUNKS):
        if SAVE:
            tl.store(ckpt_ptr + ckpt_tile + chunk * BLOCK_N, h, mask=dmask[:, None])
        end = tl.minimum(chunk * CHUNK + CHUNK, L)
        for s in range(chunk * CHUNK, end):
            t = L - 1 - s if REVERSE else s
            u, x, dt, b, c = _step_inputs(u_ptr + row, delta_ptr + row, b_ptr + state_row, c_ptr + state_row, t,
                                          bias, dmask, nmask, HAS_BIAS, SOFTPLUS)
            h = tl.exp(dt[:, None] * a) * h + (dt * u)[:, None] * b[None, :]
            y = tl.sum(h * c[None, :], axis=1)
            if HAS_D:
                y = y + skip * u
            if HAS_Z:
                z = tl.load(z_ptr + row + t, mask=dmask, other=0.0).to(tl.float32)
                y = y * z * tl.sigmoid(z)
            tl.store(out_ptr + row + t, y.to(out_ptr.dtype.element_ty), mask=dmask)


@triton.jit
def _gate_backward(h, c, skip, u, gout, z_ptr, gz_ptr, offset, dmask, HAS_D: tl.constexpr, HAS_Z: tl.constexpr):
    """The gradient reaching the ungated output ``y = C h (+ D u)`` at one step from the
    output's ``gout``; with a gate ``y * SiLU(z)``, also writes z's gradient."""
    if HAS_Z:
        y = tl.sum(h * c[None, :], axis=1)
        if HAS_D:
            y = y + skip * u
        z = tl.load(z_ptr + offset, mask=dmask, other=0.0).to(tl.float32)
        sig = tl.sigmoid(z)
        tl.store(gz_ptr + offset, (gout * y * sig * (1.0 + z * (1.0 - sig))).to(gz_ptr.dtype.element_ty), mask=dmask)
        gy = gout * z * sig
    else:
        gy = gout
    return gy


@triton.jit
def scan_bwd_kernel(u_ptr, delta_ptr, a_ptr, b_ptr, c_ptr, d_ptr, z_ptr, bias_ptr, ckpt_ptr, gout_ptr,
                    scratch_ptr, gu_ptr, gdelta_ptr, gz_ptr, ga_ptr, gb_ptr, gc_ptr, gd_ptr, gbias_ptr,
                    L, DIM, N, NCHUNKS, BATCH,
                    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                    REVERSE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr):
    """Gradients of one program's channels. Per-channel gradients (u, delta, z) are written
    in place; the shared ones are written as partials that the caller sums: A, D and
    delta_bias per batch element ``(B, DIM, ...)``, B and C per channel block
    ``(DIM blocks, B, N, L)``; no atomics, so the result does not depend on scheduling."""
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    d, n, dmask, nmask, tile_mask, a, bias, skip, row, state_row, ckpt_tile = _program_operands(
        a_ptr, d_ptr, bias_ptr, pid_b, pid_d, L, DIM, N, NCHUNKS, HAS_D, HAS_BIAS, BLOCK_D, BLOCK_N)
    scratch_tile = ((pid_b * DIM + d[:, None]) * CHUNK) * BLOCK_N + n[None, :]
    shared_row = ((pid_d * BATCH + pid_b) * N + n) * L  # (BLOCK_N,) rows of this block's gB, gC partials

    g = tl.zeros([BLOCK_D, BLOCK_N], tl.float32)  # adjoint of the state, carried back in time
    ga = tl.zeros([BLOCK_D, BLOCK_N], tl.float32)
    gskip = tl.zeros([BLOCK_D], tl.float32)
    gbias = tl.zeros([BLOCK_D], tl.float32)
    for back in range(0, NCHUNKS):
        chunk = NCHUNKS - 1 - back
        start = chunk * CHUNK
        end = tl.minimum(start + CHUNK, L)
        # 1. the chunk's states again, from its checkpoint, into the scratch buffer
        h = tl.load(ckpt_ptr + ckpt_tile + chunk * BLOCK_N, mask=dmask[:, None], other=0.0)
        for s in range(start, end):
            t = L - 1 - s if REVERSE else s
            u, x, dt, b, c = _step_inputs(u_ptr + row, delta_ptr + row, b_ptr + state_row, c_ptr + state_row, t,
                                          bias, dmask, nmask, HAS_BIAS, SOFTPLUS)
            h = tl.exp(dt[:, None] * a) * h + (dt * u)[:, None] * b[None, :]
            tl.store(scratch_ptr + scratch_tile + (s - start) * BLOCK_N, h, mask=dmask[:, None])
        tl.debug_barrier()  # the scratch states are read below by other threads of this program
        # 2. the adjoint recurrence back through the chunk
        for rs in range(start, end):
            s = end - 1 + start - rs
            k = s - start
            t = L - 1 - s if REVERSE else s
            u, x, dt, b, c = _step_inputs(u_ptr + row, delta_ptr + row, b_ptr + state_row, c_ptr + state_row, t,
                                          bias, dmask, nmask, HAS_BIAS, SOFTPLUS)
            h = tl.load(scratch_ptr + scratch_tile + k * BLOCK_N, mask=dmask[:, None], other=0.0)
            # the state before this step: the scratch's previous one, or the checkpoint at k = 0
            before = tl.load(scratch_ptr + scratch_tile + tl.maximum(k - 1, 0) * BLOCK_N, mask=dmask[:, None],
                             other=0.0)
            first = tl.load(ckpt_ptr + ckpt_tile + chunk * BLOCK_N, mask=dmask[:, None], other=0.0)
            previous = tl.where(k > 0, before, first)
            gout = tl.load(gout_ptr + row + t, mask=dmask, other=0.0).to(tl.float32)
            gy = _gate_backward(h, c, skip, u, gout, z_ptr, gz_ptr, row + t, dmask, HAS_D, HAS_Z)
            gu = tl.zeros([BLOCK_D], tl.float32)
            if HAS_D:
                gu = gy * skip
                gskip += gy * u
            tl.store(gc_ptr + shared_row + t, tl.sum(gy[:, None] * h, axis=0), mask=nmask)
            g = g + gy[:, None] * c[None, :]  # all of d loss / d h_t
            decay = tl.exp(dt[:, None] * a)
            g_decay = g * previous * decay  # d loss / d (dt a), per state
            g_drive = tl.sum(g * b[None, :], axis=1)  # d loss / d (dt u)
            gdt = tl.sum(g_decay * a, axis=1) + g_drive * u
            ga += g_decay * dt[:, None]
            gu = gu + g_drive * dt
            tl.store(gb_ptr + shared_row + t, tl.sum(g * (dt * u)[:, None], axis=0), mask=nmask)
            if SOFTPLUS:
                gx = gdt * tl.where(x > 20.0, 1.0, tl.sigmoid(x))
            else:
                gx = gdt
            gbias += gx
            tl.store(gu_ptr + row + t, gu.to(gu_ptr.dtype.element_ty), mask=dmask)
            tl.store(gdelta_ptr + row + t, gx.to(gdelta_ptr.dtype.element_ty), mask=dmask)
            g = g * decay  # to the state before this step
        tl.debug_barrier()  # the next chunk overwrites the scratch buffer
    tl.store(ga_ptr + (pid_b * DIM + d[:, None]) * N + n[None, :], ga, mask=tile_mask)
    tl.store(gd_ptr + pid_b * DIM + d, gskip, mask=dmask)
    tl.store(gbias_ptr + pid_b * DIM + d, gbias, mask=dmask)
