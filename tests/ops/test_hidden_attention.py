"""The hidden attention of a selective scan: the literal formula, and the identity
alpha u + D u = the scan's output before the gate."""

import math

import pytest
import torch
import torch.nn.functional as F

from ssamba.ops import selective_scan_reference
from ssamba.ops.hidden_attention import apply_hidden_attention, hidden_attention


def _operands(gen, batch=2, d=5, n=3, length=70, dtype=torch.float64):
    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)
    return dict(u=r(batch, d, length), delta=r(batch, d, length), A=-torch.rand(d, n, generator=gen, dtype=dtype) * 3,
                B=r(batch, n, length), C=r(batch, n, length), D=r(d), delta_bias=r(d))


def _literal(o, reverse):
    """alpha_d[t, s] = C_t . prod_{k in (s, t]} exp(dt_k A_d) * dt_s B_s, one entry at a time
    (reverse: the products run over [t, s), s >= t)."""
    dt = F.softplus(o["delta"] + o["delta_bias"][:, None])
    batch, d, length = dt.shape
    alpha = torch.zeros(batch, d, length, length, dtype=dt.dtype)
    for t in range(length):
        for s in (range(t, length) if reverse else range(t + 1)):
            steps = range(t, s) if reverse else range(s + 1, t + 1)
            decay = torch.exp(sum((dt[:, :, k, None] * o["A"] for k in steps), torch.zeros_like(o["A"])))
            alpha[:, :, t, s] = (o["C"][:, None, :, t] * decay * dt[:, :, s, None] * o["B"][:, None, :, s]).sum(-1)
    return alpha


@pytest.mark.parametrize("reverse", [False, True])
def test_maps_equal_the_literal_formula(reverse, gen):
    o = _operands(gen, length=37)  # more than one 32-step row block
    mean, per = hidden_attention(o["delta"], o["A"], o["B"], o["C"], o["delta_bias"], True, reverse,
                                 absolute=False, channels=range(5))
    literal = _literal(o, reverse)
    assert torch.allclose(per, literal, atol=1e-12, rtol=1e-10)
    assert torch.allclose(mean, literal.mean(1), atol=1e-12)
    magnitude, kept = hidden_attention(o["delta"], o["A"], o["B"], o["C"], o["delta_bias"], True, reverse,
                                       channels=[3, 1])
    assert torch.allclose(magnitude, literal.abs().mean(1), atol=1e-12)
    assert torch.equal(kept, per[:, [3, 1]])
    upper = torch.ones(37, 37, dtype=torch.bool).triu(1)
    assert (literal[..., upper.t() if reverse else upper] == 0).all()  # causal / anti-causal


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("reverse", [False, True])
def test_alpha_applied_to_u_plus_the_skip_is_the_scan_before_the_gate(reverse, dtype, tol, gen):
    o = _operands(gen, length=101, dtype=dtype)
    _, alpha = hidden_attention(o["delta"], o["A"], o["B"], o["C"], o["delta_bias"], True, reverse,
                                channels=range(5))
    y = apply_hidden_attention(alpha, o["u"], o["D"])
    scan = selective_scan_reference(o["u"], o["delta"], o["A"], o["B"], o["C"], o["D"], None, o["delta_bias"], True,
                                    reverse)
    assert ((y - scan).abs().max() / scan.abs().max()).item() < tol


def test_long_decays_underflow_to_zero_not_overflow(gen):
    # large steps and strong decay: the split through each block's first step keeps both
    # factors at most 1, so far-away sources read as exact zeros, never inf or nan
    o = _operands(gen, d=2, length=300, dtype=torch.float32)
    o["delta"] = o["delta"].abs() * 20
    mean, _ = hidden_attention(o["delta"], o["A"] * 30, o["B"], o["C"], o["delta_bias"], True)
    assert torch.isfinite(mean).all() and mean[:, -1, 0].abs().max() == 0 and mean.diagonal(dim1=1, dim2=2).abs().min() > 0


def test_bad_shapes_and_channels_are_refused(gen):
    o = _operands(gen)
    with pytest.raises(ValueError, match="shapes"):
        hidden_attention(o["delta"], o["A"][:, :2], o["B"], o["C"])
    with pytest.raises(ValueError, match="out of range"):
        hidden_attention(o["delta"], o["A"], o["B"], o["C"], channels=[5])
    assert math.isfinite(float(hidden_attention(o["delta"], o["A"], o["B"], o["C"])[0].sum()))
