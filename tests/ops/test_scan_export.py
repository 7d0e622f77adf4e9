"""The exportable scan (torch's scan operator) against the reference: outputs and
gradients, both directions, with and without the optional operands."""

from __future__ import annotations

import pytest
import torch

from ssamba.ops import selective_scan


def _operands(length: int, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return {"u": r(2, 6, length), "delta": r(2, 6, length) * 0.5, "A": -torch.rand(6, 4, generator=g, dtype=dtype) - 0.2,
            "B": r(2, 4, length), "C": r(2, 4, length), "D": r(6), "z": r(2, 6, length), "delta_bias": r(6) * 0.1}


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("optional", [True, False])
def test_export_backend_matches_the_reference_with_gradients(reverse, optional):
    ops = _operands(11)
    if not optional:
        ops.update(D=None, z=None, delta_bias=None)
    results = []
    for backend in ("export", "reference"):
        leaves = {k: (v.clone().requires_grad_() if v is not None else None) for k, v in ops.items()}
        out = selective_scan(**leaves, delta_softplus=optional, backend=backend, reverse=reverse)
        weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        (out * weight).sum().backward()
        results.append((out.detach(), {k: v.grad for k, v in leaves.items() if v is not None}))
    (out, grads), (ref, ref_grads) = results
    assert torch.allclose(out, ref, atol=1e-10)
    for name in ref_grads:
        assert torch.allclose(grads[name], ref_grads[name], atol=1e-9), name


def test_export_backend_is_never_chosen_automatically():
    from ssamba.ops import available_backends

    assert available_backends()[-1] == "export"
