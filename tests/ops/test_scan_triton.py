"""The "triton" backend against the reference, outputs and every gradient.

On CPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``) on small shapes,
with a short chunk and channel block so that several chunks and channel blocks are
crossed; on a GPU the same checks run compiled, at the model's shapes, plus bf16.
"""

from __future__ import annotations

import pytest
import torch

from ssamba.ops import available_backends, scan_triton, selective_scan, selective_scan_reference

triton = pytest.importorskip("triton")

on_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
OPTIONAL = ("D", "z", "delta_bias")


@pytest.fixture
def interpreted(monkeypatch):
    """The kernels in Triton's interpreter (tests/conftest.py chooses it on a machine
    without a GPU), with 8-step chunks and 4-channel blocks."""
    if not triton.knobs.runtime.interpret:
        pytest.skip("Triton was imported without TRITON_INTERPRET=1 (a GPU machine runs the GPU tests)")
    monkeypatch.setattr(scan_triton, "CHUNK", 8)
    monkeypatch.setattr(scan_triton, "BLOCK_D", 4)


def make_inputs(batch=2, channels=6, length=19, d_state=3, device="cpu", dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    x = dict(u=r(batch, channels, length), delta=0.5 * r(batch, channels, length) - 1.0,
             A=-torch.exp(0.5 * r(channels, d_state)), B=r(batch, d_state, length), C=r(batch, d_state, length),
             D=r(channels), z=r(batch, channels, length), delta_bias=0.3 * r(channels))
    return {k: v.to(device=device, dtype=dtype) for k, v in x.items()}


def run(fn, x, **flags):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in x.items()}
    out = fn(**leaves, **flags)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.device)
    (out.float() * weights).sum().backward()
    return out, {k: v.grad for k, v in leaves.items()}


def assert_close(got, want, tol):
    scale = want.float().abs().max().clamp_min(1e-6)
    error = ((got.float() - want.float()).abs().max() / scale).item()
    assert error <= tol, f"relative error {error:.2e} > {tol:.0e}"


def check_against_reference(x, tol, **flags):
    reference_x = {k: v.float() for k, v in x.items()}  # the oracle in fp32 whatever the inputs' dtype
    want, want_grads = run(selective_scan_reference, reference_x, **flags)
    got, got_grads = run(scan_triton.selective_scan_triton, x, **flags)
    assert got.dtype == x["u"].dtype and got.shape == want.shape
    assert_close(got, want, tol)
    assert set(got_grads) == set(want_grads)
    for name, grad in got_grads.items():
        assert grad is not None and grad.dtype == x[name].dtype, name
        assert torch.isfinite(grad.float()).all(), name
        assert_close(grad, want_grads[name], tol)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("optional", ["all", "none"])
def test_matches_reference_under_the_interpreter(interpreted, reverse, optional):
    x = make_inputs()
    if optional == "none":
        x = {k: v for k, v in x.items() if k not in OPTIONAL}
    check_against_reference(x, 1e-4, delta_softplus=optional == "all", reverse=reverse)


@pytest.mark.parametrize("missing", OPTIONAL)
def test_each_optional_input_alone_is_left_out(interpreted, missing):
    x = {k: v for k, v in make_inputs(channels=5, length=11, d_state=2).items() if k != missing}
    check_against_reference(x, 1e-4, delta_softplus=True, reverse=missing == "z")


@pytest.mark.parametrize("length", [1, 8, 9])
def test_lengths_at_and_around_one_chunk(interpreted, length):
    check_against_reference(make_inputs(batch=1, channels=3, length=length, d_state=5), 1e-4, delta_softplus=True)


def test_softplus_of_large_and_small_arguments(interpreted):
    x = make_inputs(batch=1, channels=4, length=9)
    x["delta"] = torch.tensor([-30.0, -9.0, 0.0, 25.0])[:, None].expand(1, 4, 9).contiguous()
    x["delta_bias"] = torch.zeros(4)
    check_against_reference(x, 1e-4, delta_softplus=True)


def test_fp16_inputs_keep_their_dtype(interpreted):
    check_against_reference(make_inputs(batch=1, channels=5, length=10, dtype=torch.float16), 2e-2,
                            delta_softplus=True, reverse=True)


def test_inference_without_gradients_equals_training_forward(interpreted):
    x = make_inputs()
    with torch.no_grad():
        plain = scan_triton.selective_scan_triton(**x, delta_softplus=True)
    trained, _ = run(scan_triton.selective_scan_triton, x, delta_softplus=True)
    assert torch.equal(plain, trained.detach())


def test_backward_saves_chunk_states_not_every_state(interpreted):
    x = make_inputs(length=40)  # 5 chunks of 8 steps
    sizes = []
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.shape) or t, lambda t: t):
        scan_triton.selective_scan_triton(**leaves, delta_softplus=True)
    batch, channels, length = x["u"].shape
    assert (batch, channels, 5, 4) in sizes  # the checkpoints: ceil(40 / 8) states of 4 (3 padded) per channel
    assert all(torch.Size(s).numel() <= batch * channels * length for s in sizes)  # nothing of size B*D*L*N


def test_the_dispatcher_runs_it_on_cpu_tensors_under_the_interpreter_when_named(interpreted):
    # What the refusal below tells users to do works through the public entry point,
    # while "auto" still never picks the interpreter.
    x = make_inputs()
    assert "triton" not in available_backends(x["u"])
    got = selective_scan(**x, delta_softplus=True, backend="triton")
    assert_close(got, selective_scan_reference(**x, delta_softplus=True), 1e-5)


def test_cpu_tensors_are_refused_without_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    u = torch.zeros(1, 2, 3)
    assert "triton" not in available_backends(u)  # "auto" never picks it on CPU
    x = make_inputs(batch=1, channels=2, length=3)
    with pytest.raises(RuntimeError, match="scan backend 'triton' is unavailable: Triton kernels run on CUDA"):
        selective_scan(**x, backend="triton")


@on_gpu
def test_auto_prefers_triton_to_the_reference_on_cuda():
    names = available_backends(torch.zeros(1, 1, 1, device="cuda"))
    assert names.index("triton") < names.index("reference")


@on_gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("reverse", [False, True])
def test_matches_reference_on_the_gpu(dtype, tol, reverse):
    # the tiny model's shapes: 2 x 192 inner channels, 16 states, 512 tokens; odd sizes beside
    for shape in ((2, 384, 512, 16), (3, 37, 101, 5)):
        batch, channels, length, d_state = shape
        x = make_inputs(batch, channels, length, d_state, device="cuda", dtype=dtype)
        check_against_reference(x, tol, delta_softplus=True, reverse=reverse)
