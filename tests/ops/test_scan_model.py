"""The full SSAMBA-tiny on CPU runs its scans on the fused ``cpu`` kernel and matches the
same model computed with the reference scan (outputs and every parameter gradient)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import ssamba
from ssamba import ops
from ssamba.ops import scan_cpu

FRAMES = 64  # 8 x 4 patches + the class token: L = 33 (the reference scan loops over L in Python)


class CountingLibrary:
    """Wraps the loaded kernel library and counts its forward and backward calls."""

    def __init__(self, lib):
        self._lib = lib
        self.calls = {"ssamba_scan_fwd": 0, "ssamba_scan_bwd": 0}

    def __getattr__(self, name):
        attr = getattr(self._lib, name)
        if name not in self.calls:
            return attr

        def counted(*args):
            self.calls[name] += 1
            return attr(*args)

        return counted


@pytest.fixture
def spies(monkeypatch):
    """Count calls of each registered backend and of the compiled kernel's entry points."""
    lib = scan_cpu.load_library()
    if lib is None:
        pytest.skip(f"CPU scan kernel unavailable: {scan_cpu._load_error}")
    counts = {name: 0 for name in ops._BACKENDS}
    for name, backend in list(ops._BACKENDS.items()):
        def spy(*args, _fn=backend.fn, _name=name, **kwargs):
            counts[_name] += 1
            return _fn(*args, **kwargs)

        monkeypatch.setitem(ops._BACKENDS, name, dataclasses.replace(backend, fn=spy))
    kernel = CountingLibrary(lib)
    monkeypatch.setattr(scan_cpu, "_lib", kernel)
    return counts, kernel.calls


def run(model, spec, weights):
    out = model.forward_features(spec)
    (out * weights).sum().backward()
    return out.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def test_ssamba_tiny_uses_the_cpu_kernel_and_matches_the_reference(spies):
    counts, kernel_calls = spies
    torch.manual_seed(0)
    fast = ssamba.create_model("ssamba_tiny", input_tdim=FRAMES).eval()  # eval: no drop-path noise
    assert fast.config.scan_backend == "auto"
    slow = ssamba.create_model("ssamba_tiny", input_tdim=FRAMES, scan_backend="reference").eval()
    slow.load_state_dict(fast.state_dict())
    gen = torch.Generator().manual_seed(1)
    spec = torch.randn(2, FRAMES, 128, generator=gen)
    weights = torch.randn(2, 33, 192, generator=gen)

    out_fast, grads_fast = run(fast, spec, weights)
    # 24 layers x 2 directions, all through "auto" -> "cpu" -> the compiled kernel, none elsewhere.
    assert counts["cpu"] == 48 and counts["reference"] == 0
    assert kernel_calls == {"ssamba_scan_fwd": 48, "ssamba_scan_bwd": 48}

    out_slow, grads_slow = run(slow, spec, weights)
    assert counts["reference"] == 48 and counts["cpu"] == 48  # the reference model used no kernel
    assert kernel_calls == {"ssamba_scan_fwd": 48, "ssamba_scan_bwd": 48}

    assert out_fast.shape == (2, 33, 192)
    assert rel_err(out_fast, out_slow) <= 1e-4
    assert grads_fast.keys() == grads_slow.keys()
    # every parameter that takes part in the forward has a gradient (mask_embed does not)
    assert set(grads_fast) == {n for n, _ in fast.named_parameters()} - {"mask_embed"}
    worst = max(grads_fast, key=lambda n: rel_err(grads_fast[n], grads_slow[n]))
    assert rel_err(grads_fast[worst], grads_slow[worst]) <= 1e-4, worst
    # the scan parameters' gradients (A_log, D, dt_proj bias) come from the kernel's backward
    for name in ("layers.0.mixer.forward_ssm.A_log", "layers.23.mixer.backward_ssm.D",
                 "layers.11.mixer.backward_ssm.dt_proj.bias"):
        assert grads_fast[name].abs().max() > 0
        assert rel_err(grads_fast[name], grads_slow[name]) <= 1e-4
