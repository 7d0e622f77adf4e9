"""The "cuda" backend (mamba-ssm's kernel) against the reference; skipped without both."""

from __future__ import annotations

import pytest
import torch

from ssamba.ops import available_backends, scan_cuda, selective_scan


def test_unavailable_for_cpu_tensors():
    # Must hold (and must not raise) whether or not mamba-ssm is installed.
    assert not scan_cuda.is_available(torch.zeros(1, 1, 1))
    assert "cuda" not in available_backends(torch.zeros(1, 1, 1))


def _have_mamba() -> bool:
    return torch.cuda.is_available() and scan_cuda._mamba_selective_scan_fn() is not None


needs_mamba = pytest.mark.skipif(not _have_mamba(), reason="needs CUDA and mamba-ssm")


def make_inputs(batch=2, channels=8, length=300, d_state=16, device="cuda"):
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    x = dict(
        u=r(batch, channels, length),
        delta=0.5 * r(batch, channels, length) - 1.0,
        A=-torch.exp(0.5 * r(channels, d_state)),
        B=r(batch, d_state, length),
        C=r(batch, d_state, length),
        D=r(channels),
        z=r(batch, channels, length),
        delta_bias=0.3 * r(channels),
    )
    return {k: v.to(device) for k, v in x.items()}


def run(backend, x, reverse=False):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in x.items()}
    out = selective_scan(**leaves, delta_softplus=True, backend=backend, reverse=reverse)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.device)
    (out.float() * grad_out).sum().backward()
    return out, {k: v.grad for k, v in leaves.items()}


@needs_mamba
def test_auto_picks_cuda():
    assert available_backends(torch.zeros(1, 1, 1, device="cuda"))[0] == "cuda"


@needs_mamba
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reverse", [False, True])
def test_matches_reference(dtype, reverse):
    x = make_inputs()
    x = {k: (v.to(dtype) if k in ("u", "delta", "B", "C", "z") else v) for k, v in x.items()}
    expected, g_ref = run("reference", x, reverse)
    got, g_cuda = run("cuda", x, reverse)
    assert got.dtype == dtype
    tol = 1e-3 if dtype == torch.float32 else 3e-2
    for name, a, b in [("output", got, expected)] + [(k, g_cuda[k], g_ref[k]) for k in g_ref]:
        scale = b.float().abs().max().clamp_min(1e-12)
        err = (a.float() - b.float()).abs().max()
        assert err <= tol * scale, f"{name}: max abs err {err:.3g}, scale {scale:.3g}"
