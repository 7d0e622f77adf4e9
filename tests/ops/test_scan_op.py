"""The CPU scan as PyTorch operators (``ssamba::selective_scan_cpu_fwd`` / ``_bwd``).

The registration is what lets ``torch.compile(fullgraph=True)`` and ``torch.export``
trace an SSAMBA encoder without a graph break; autograd reaches the kernel's backward
through the forward's registered formula.
"""

from __future__ import annotations

import pytest
import torch

import ssamba
from ssamba.ops import scan_cpu

pytestmark = pytest.mark.skipif(scan_cpu.load_library() is None, reason="the CPU kernel does not build here")


def _operands(seed=0, batch=2, dim=5, length=70, n=16, optional=True):
    g = torch.Generator().manual_seed(seed)
    t = [torch.randn(batch, dim, length, generator=g), torch.randn(batch, dim, length, generator=g),
         -torch.rand(dim, n, generator=g) - 0.1, torch.randn(batch, n, length, generator=g),
         torch.randn(batch, n, length, generator=g)]
    if optional:
        t += [torch.randn(dim, generator=g), torch.randn(batch, dim, length, generator=g), torch.randn(dim, generator=g)]
    else:
        t += [None, None, None]
    return [x.requires_grad_() if x is not None else None for x in t]


@pytest.mark.parametrize("optional", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
def test_operator_registration_passes_opcheck(optional, reverse):
    args = (*_operands(optional=optional), True, reverse, True)
    torch.library.opcheck(torch.ops.ssamba.selective_scan_cpu_fwd.default, args)


def test_no_checkpoints_without_autograd():
    with torch.no_grad():
        out, ckpt = torch.ops.ssamba.selective_scan_cpu_fwd(*_operands(), True, False, False)
    assert ckpt.numel() == 0 and out.shape == (2, 5, 70)


@pytest.mark.slow
@pytest.mark.parametrize("training", [False, True])
def test_compiled_encoder_has_one_graph_and_the_eager_results(training):
    torch.manual_seed(0)
    model = ssamba.create_model("ssamba_test", drop_path_rate=0.0).train(training)
    spec = torch.randn(2, 64, 128)
    compiled = torch.compile(model.forward_features, fullgraph=True, backend="aot_eager")  # raises on a graph break
    results = []
    for fn in (compiled, model.forward_features):
        model.zero_grad()
        with torch.set_grad_enabled(training):
            out = fn(spec)
            if training:
                (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (out, grads), (ref, ref_grads) = results
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)
    assert grads.keys() == ref_grads.keys() and (len(grads) > 0) == training
    for name in grads:
        assert torch.allclose(grads[name], ref_grads[name], atol=1e-6, rtol=1e-4), name


def test_exported_encoder_matches_eager():
    model = ssamba.create_model("ssamba_test", num_classes=3).eval()
    spec = torch.randn(2, 64, 128)
    program = torch.export.export(model, (spec,))
    names = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert any("selective_scan_cpu_fwd" in name for name in names), sorted(names)[:20]
    assert torch.allclose(program.module()(spec), model(spec), atol=1e-6)
