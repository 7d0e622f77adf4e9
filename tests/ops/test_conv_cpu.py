"""The C++ SiLU(depthwise conv) kernel against its PyTorch oracle (ssamba.ops.conv)."""

import pytest
import torch
import torch.nn.functional as F

from ssamba.ops.conv import conv_silu, conv_silu_backward_reference, depthwise_conv
from ssamba.ops import conv_cpu


@pytest.fixture(scope="module", autouse=True)
def kernel():
    x, w = torch.zeros(1, 1, 1), torch.zeros(1, 1, 4)
    if not conv_cpu.is_available(x, w):
        pytest.skip(f"the conv kernel does not build here: {conv_cpu._error}")


def _oracle(x, w, b, reverse, grad):
    """Output and gradients in float64 PyTorch operations."""
    x64, w64, g64 = x.double(), w.double(), grad.double()
    b64 = None if b is None else b.double()
    pre = depthwise_conv(x64, w64, b64, reverse)
    grads = conv_silu_backward_reference(g64, x64, w64, pre, reverse, b is not None)
    return (F.silu(pre), *grads)


def _close(got, want, what):
    scale = want.abs().max().item() + 1e-12
    err = (got.double() - want).abs().max().item() / scale
    assert err < 1e-5, f"{what}: relative error {err:.2e}"


@pytest.mark.parametrize("length", [1, 2, 3, 4, 15, 16, 17, 57, 100])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("taps", [1, 4, 7])
@pytest.mark.parametrize("with_bias", [True, False])
def test_kernel_matches_the_pytorch_formulation(length, reverse, taps, with_bias):
    g = torch.Generator().manual_seed(length * 100 + taps * 10 + reverse)
    x = torch.randn(3, 5, length, generator=g)
    w = torch.randn(5, 1, taps, generator=g)
    b = torch.randn(5, generator=g) if with_bias else None
    grad = torch.randn(3, 5, length, generator=g)
    want = _oracle(x, w, b, reverse, grad)
    got = (conv_cpu.conv_silu_forward(x, w, b, reverse), *conv_cpu.conv_silu_backward(grad, x, w, b, reverse))
    for name, a, e in zip(("out", "x", "weight", "bias"), got, want):
        if e is None:
            assert a is None, name
        else:
            assert a.shape == e.shape and a.dtype == torch.float32, name
            _close(a, e, name)


def test_conv1d_definition_and_autograd_through_the_layer_function():
    # conv_silu under autograd takes the kernel for fp32 CPU tensors; its output and
    # gradients equal F.conv1d's (causal, and flipped for the reverse direction).
    g = torch.Generator().manual_seed(1)
    for reverse in (False, True):
        x = torch.randn(2, 6, 40, generator=g, requires_grad=True)
        w = torch.randn(6, 1, 4, generator=g, requires_grad=True)
        b = torch.randn(6, generator=g, requires_grad=True)
        up = torch.randn(2, 6, 40, generator=g)
        out = conv_silu(x, w, b, reverse)
        (out * up).sum().backward()
        got = [out.detach(), x.grad, w.grad, b.grad]
        leaves = [t.detach().double().requires_grad_() for t in (x, w, b)]
        xs = leaves[0].flip(-1) if reverse else leaves[0]
        ref = F.silu(F.conv1d(xs, leaves[1], leaves[2], padding=3, groups=6)[..., :40])
        ref = ref.flip(-1) if reverse else ref
        (ref * up.double()).sum().backward()
        for name, a, e in zip(("out", "x", "w", "b"), got, [ref.detach()] + [t.grad for t in leaves]):
            _close(a, e, name)


def test_only_requested_gradients_and_no_bias():
    g = torch.Generator().manual_seed(2)
    x, w, grad = torch.randn(2, 3, 20, generator=g), torch.randn(3, 1, 4, generator=g), torch.randn(2, 3, 20, generator=g)
    gx, gw, gb = conv_cpu.conv_silu_backward(grad, x, w, None, False, need_x=False)
    assert gx is None and gb is None and gw.shape == w.shape
    gx, gw, gb = conv_cpu.conv_silu_backward(grad, x, w, torch.zeros(3), True, need_weight=False, need_bias=False)
    assert gw is None and gb is None and gx.shape == x.shape


def test_results_do_not_depend_on_the_thread_count():
    # Every channel is computed by one thread in a fixed order: bitwise equal results.
    g = torch.Generator().manual_seed(3)
    x, w, b = torch.randn(4, 9, 300, generator=g), torch.randn(9, 1, 4, generator=g), torch.randn(9, generator=g)
    grad = torch.randn(4, 9, 300, generator=g)
    old_threads, old_min = torch.get_num_threads(), conv_cpu.MIN_ELEMENTS_PER_THREAD
    results = []
    try:
        conv_cpu.MIN_ELEMENTS_PER_THREAD = 1
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append([conv_cpu.conv_silu_forward(x, w, b, True),
                            *conv_cpu.conv_silu_backward(grad, x, w, b, True)])
    finally:
        torch.set_num_threads(old_threads)
        conv_cpu.MIN_ELEMENTS_PER_THREAD = old_min
    for other in results[1:]:
        for a, e in zip(other, results[0]):
            assert torch.equal(a, e)


def test_channel_slices_and_strided_inputs():
    # The lean inference path passes weight rows of a channel block and sliced inputs.
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 12, 30, generator=g)[:, 3:9]
    w = torch.randn(12, 1, 4, generator=g)[3:9]
    b = torch.randn(12, generator=g)[3:9]
    want = F.silu(depthwise_conv(x, w, b, True))
    with torch.no_grad():
        got = conv_silu(x, w, b, True)
    assert torch.allclose(got, want, atol=1e-5)


def test_other_dtypes_take_the_pytorch_path(monkeypatch):
    calls = []
    monkeypatch.setattr(conv_cpu, "conv_silu_forward", lambda *a: calls.append(a) or None)
    for dtype in (torch.float64, torch.bfloat16):
        x = torch.randn(1, 2, 8, dtype=dtype, requires_grad=True)
        w = torch.randn(2, 1, 4, dtype=dtype, requires_grad=True)
        out = conv_silu(x, w, None)
        out.sum().backward()
        assert out.dtype == dtype and x.grad is not None
    assert not calls
    assert not conv_cpu.is_available(torch.zeros(1, 1, 1, dtype=torch.float64), torch.zeros(1, 1, 4))
    assert not conv_cpu.is_available(torch.zeros(1, 1, 1), torch.zeros(1, 1, 17))  # more taps than the kernel holds


def test_without_a_compiler_the_pytorch_path_computes_the_same(monkeypatch):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 25, generator=g, requires_grad=True)
    w = torch.randn(4, 1, 4, generator=g, requires_grad=True)
    out = conv_silu(x, w, None, True)
    out.sum().backward()
    with_kernel = [out.detach(), x.grad.clone(), w.grad.clone()]
    x.grad = w.grad = None
    monkeypatch.setattr(conv_cpu, "_lib", None)
    monkeypatch.setattr(conv_cpu, "_error", None)
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert not conv_cpu.is_available(x, w)
    assert "no C++ compiler" in conv_cpu._error
    out = conv_silu(x, w, None, True)
    out.sum().backward()
    for a, e in zip((out.detach(), x.grad, w.grad), with_kernel):
        assert torch.allclose(a, e, atol=1e-5)
