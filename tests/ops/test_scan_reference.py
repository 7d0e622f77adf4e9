import itertools

import pytest
import torch
import torch.nn.functional as F

from ssamba.ops import available_backends, selective_scan, selective_scan_reference


def naive_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, reverse=False):
    """Element by element, straight from the equations, in float64 (``reverse``: the
    recurrence visits t = L-1 ... 0)."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    batch, channels, length = u.shape
    out = torch.zeros(batch, channels, length, dtype=torch.float64)
    for b, d in itertools.product(range(batch), range(channels)):
        h = torch.zeros(A.shape[1], dtype=torch.float64)
        for t in (range(length - 1, -1, -1) if reverse else range(length)):
            dt = delta[b, d, t] + (delta_bias[d].double() if delta_bias is not None else 0.0)
            if delta_softplus:
                dt = F.softplus(dt)
            h = torch.exp(dt * A[d]) * h + dt * B[b, :, t] * u[b, d, t]
            y = (h * C[b, :, t]).sum()
            if D is not None:
                y = y + D[d].double() * u[b, d, t]
            if z is not None:
                y = y * F.silu(z[b, d, t].double())
            out[b, d, t] = y
    return out


def random_inputs(gen, batch=2, channels=3, length=7, d_state=4):
    def r(*shape):
        return torch.randn(*shape, generator=gen)

    return dict(
        u=r(batch, channels, length),
        delta=0.5 * r(batch, channels, length),
        A=-torch.rand(channels, d_state, generator=gen) - 0.1,
        B=r(batch, d_state, length),
        C=r(batch, d_state, length),
        D=r(channels),
        z=r(batch, channels, length),
        delta_bias=0.1 * r(channels),
    )


@pytest.mark.parametrize("use_d", [False, True])
@pytest.mark.parametrize("use_z", [False, True])
@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("softplus", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_reference_matches_naive_loop(use_d, use_z, use_bias, softplus, reverse, gen):
    x = random_inputs(gen)
    if not softplus:
        x["delta"] = x["delta"].abs()  # a positive step size without softplus
    kwargs = dict(
        D=x["D"] if use_d else None,
        z=x["z"] if use_z else None,
        delta_bias=x["delta_bias"].abs() if use_bias else None,
        delta_softplus=softplus,
    )
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"])
    expected = naive_scan(*args, **kwargs, reverse=reverse)
    got = selective_scan(*args, backend="reference", **kwargs, reverse=reverse)
    assert got.dtype == torch.float32 and got.shape == x["u"].shape
    assert torch.allclose(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_reference_gradients_pass_gradcheck(gen):
    x = {k: v.double().requires_grad_() for k, v in random_inputs(gen, 1, 2, 5, 3).items()}
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True)
    assert torch.autograd.gradcheck(selective_scan_reference, args)


def test_low_precision_inputs_return_their_dtype(gen):
    x = random_inputs(gen)
    half = {k: v.bfloat16() for k, v in x.items()}
    out = selective_scan_reference(**half, delta_softplus=True)
    assert out.dtype == torch.bfloat16
    full = selective_scan_reference(**{k: v.float() for k, v in half.items()}, delta_softplus=True)
    assert torch.allclose(out.float(), full, atol=2e-2, rtol=2e-2)


def test_reference_is_always_registered():
    assert "reference" in available_backends()


def test_shape_errors_and_unknown_backend(gen):
    x = random_inputs(gen)
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"])
    with pytest.raises(ValueError, match="B must be"):
        selective_scan(x["u"], x["delta"], x["A"], x["B"][:, :, :-1], x["C"])
    with pytest.raises(ValueError, match="u must be"):
        selective_scan(x["u"][0], x["delta"][0], x["A"], x["B"], x["C"])
    with pytest.raises(ValueError, match="D must be"):
        selective_scan(*args, D=x["D"][:-1])
    with pytest.raises(ValueError, match="unknown scan backend"):
        selective_scan(*args, backend="nope")
