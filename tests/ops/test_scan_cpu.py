"""The fused CPU scan ("cpu" backend) against the reference: outputs and every gradient."""

from __future__ import annotations

import warnings

import pytest
import torch

from ssamba.ops import available_backends, scan_cpu, selective_scan, selective_scan_reference

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


@pytest.fixture(scope="module")
def kernel():
    if scan_cpu.load_library() is None:
        pytest.skip("CPU scan kernel unavailable (test_kernel_compiles reports why)")
    return scan_cpu


def test_kernel_compiles():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fallback warning would fail here
        assert scan_cpu.load_library() is not None, scan_cpu._load_error
    assert scan_cpu.chunk_size() % 16 == 0


def make_inputs(gen, batch=2, channels=5, length=37, d_state=16, softplus=True):
    def r(*shape):
        return torch.randn(*shape, generator=gen)

    bias = 0.3 * r(channels)
    if softplus:
        delta = 0.5 * r(batch, channels, length) - 1.0
    else:  # a positive step size without softplus
        delta = 0.5 * torch.rand(batch, channels, length, generator=gen) + 0.01
        bias = bias.abs()
    return dict(
        u=r(batch, channels, length),
        delta=delta,
        A=-torch.exp(0.5 * r(channels, d_state)),
        B=r(batch, d_state, length),
        C=r(batch, d_state, length),
        D=r(channels),
        z=r(batch, channels, length),
        delta_bias=bias,
    )


def run(backend, x, softplus, grad_out=None, reverse=False):
    """Output and gradients w.r.t. every tensor input that is not None."""
    leaves = {k: (v.detach().clone().requires_grad_() if v is not None else None) for k, v in x.items()}
    out = selective_scan(**leaves, delta_softplus=softplus, backend=backend, reverse=reverse)
    if grad_out is None:
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    (out.float() * grad_out).sum().backward()
    grads = {k: v.grad for k, v in leaves.items() if v is not None}
    return out, grads


def assert_close(actual, expected, rtol, what=""):
    """max |actual - expected| <= rtol * max |expected| (tolerance relative to the scale)."""
    assert actual.shape == expected.shape, what
    scale = expected.float().abs().max().clamp_min(1e-12)
    err = (actual.float() - expected.float()).abs().max()
    assert err <= rtol * scale, f"{what}: max abs err {err:.3g}, scale {scale:.3g}"


def compare(x, softplus, rtol=1e-4, dtype=None, reverse=False):
    expected, g_ref = run("reference", x, softplus, reverse=reverse)
    got, g_cpu = run("cpu", x, softplus, reverse=reverse)
    assert got.dtype == x["u"].dtype and got.shape == x["u"].shape
    assert_close(got, expected, rtol, "output")
    assert g_cpu.keys() == g_ref.keys()
    for name in g_ref:
        assert g_cpu[name] is not None, name
        assert g_cpu[name].dtype == x[name].dtype, name
        assert_close(g_cpu[name], g_ref[name], rtol, f"grad {name}")


def lengths(chunk):
    return {"1": 1, "short": chunk - 5, "chunk": chunk, "multi": 3 * chunk + 7}


@pytest.mark.parametrize("length", ["1", "short", "chunk", "multi"])
@pytest.mark.parametrize("use_d", [False, True])
@pytest.mark.parametrize("use_z", [False, True])
@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("softplus", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_matches_reference(kernel, gen, length, use_d, use_z, use_bias, softplus, reverse):
    L = lengths(kernel.chunk_size())[length]
    x = make_inputs(gen, batch=2, channels=5, length=L, softplus=softplus)
    x["D"] = x["D"] if use_d else None
    x["z"] = x["z"] if use_z else None
    x["delta_bias"] = x["delta_bias"] if use_bias else None
    compare(x, softplus, reverse=reverse)


def test_reverse_is_not_forward(kernel, gen):
    # The reverse scan reads the sequence backwards: its first output depends on the
    # last input, which the forward scan's first output cannot see.
    x = make_inputs(gen, batch=1, channels=3, length=2 * kernel.chunk_size() + 3)
    fwd = selective_scan(**x, delta_softplus=True, backend="cpu")
    bwd = selective_scan(**x, delta_softplus=True, backend="cpu", reverse=True)
    x["u"][..., -1] += 1.0
    assert torch.equal(selective_scan(**x, delta_softplus=True, backend="cpu")[..., 0], fwd[..., 0])
    assert not torch.equal(selective_scan(**x, delta_softplus=True, backend="cpu", reverse=True)[..., 0],
                           bwd[..., 0])


@pytest.mark.parametrize("d_state", [1, 5, 16, 24, 40, 64, 144])
def test_state_sizes(kernel, gen, d_state):
    # 144 > 128 states exercises the generic (non-specialised) width.
    x = make_inputs(gen, batch=2, channels=3, length=70, d_state=d_state)
    compare(x, softplus=True)


@pytest.mark.parametrize("threads", [1, 2, 3, 7, 64])
def test_thread_partitions(kernel, gen, threads, monkeypatch):
    # Thread ranges that split a batch element, cover several, or outnumber the channels
    # (the work threshold for a second thread is lifted so that tiny inputs split too).
    monkeypatch.setattr(kernel, "MIN_STEPS_PER_THREAD", 1)
    x = make_inputs(gen, batch=3, channels=5, length=kernel.chunk_size() + 9)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert kernel._partition(3, 5, x["u"].shape[-1])[0] == min(torch.get_num_threads(), 15)
        compare(x, softplus=True)
        compare(x, softplus=True, reverse=True)
    finally:
        torch.set_num_threads(before)


def test_long_sequence(kernel, gen):
    x = make_inputs(gen, batch=1, channels=4, length=3000)
    x["A"] = -torch.exp(torch.linspace(-4, 1, 16)).repeat(4, 1)  # slow and fast decays
    compare(x, softplus=True)


def check_softplus_and_sigmoid():
    # With one step, u = B = C = 1 and no D or gate, each channel's output is the
    # kernel's softplus(delta) and the gradient of delta its derivative, sigmoid(delta):
    # checked on a grid over both tails, the threshold at 20 and around 0 against float64.
    x = torch.cat([torch.linspace(-100, 100, 4001), torch.tensor([0.0, 1e-30, -1e-30, 1e-7, -1e-7,
                                                                  19.999, 20.0, 20.001, -87.0, -88.0])])
    n = x.numel()
    delta = x.view(1, n, 1).clone().requires_grad_(True)
    out = selective_scan(torch.ones(1, n, 1), delta, -torch.ones(n, 1), torch.ones(1, 1, 1), torch.ones(1, 1, 1),
                         delta_softplus=True, backend="cpu")
    out.sum().backward()
    for got, want in ((out.detach().view(-1), torch.nn.functional.softplus(x.double())),
                      (delta.grad.view(-1), torch.sigmoid(x.double()))):
        err = (got.double() - want).abs()
        normal = want > 1e-37  # below: exp(-|x|) is flushed to zero with the subnormals
        assert (err[~normal] <= 1e-37).all()
        # exp's two-part reduction keeps the far tail (x near -87, |x log2 e| ~ 125) as
        # accurate as the middle (rounding x * log2(e) first cost this test 3.7e-6 there).
        rel = err[normal] / want[normal]
        assert rel.max() < 5e-7, rel.max()
    assert torch.equal(out.detach().view(-1)[x > 20], x[x > 20])  # linear above the threshold, as in torch


def test_softplus_and_its_derivative_match_torch(kernel):
    check_softplus_and_sigmoid()


@pytest.mark.parametrize("target", ["avx512", "avx2", "x86-64", "armv8"])
def test_every_targets_build_matches_the_reference(kernel, gen, monkeypatch, target):
    # Each SSAMBA_CPU_TARGET this CPU can run, built and loaded beside the native build:
    # 16-lane vectors with the AVX-512 intrinsics, 8 lanes with AVX2, 4 on the x86-64
    # baseline (no FMA) and NEON; the polynomials through softplus and sigmoid, and the
    # scan both ways over a length with a partial chunk. tests/ops/test_kernel_targets.py
    # runs the C-level parity of the builds this CPU cannot run (under qemu for armv8).
    from ssamba.ops import build

    if build.runnable_here(target):
        pytest.skip(build.runnable_here(target))
    lib = kernel._configure(build.load(kernel.SOURCE, target))
    assert lib is not kernel._lib
    monkeypatch.setattr(kernel, "_lib", lib)
    assert lib.ssamba_scan_lanes() == {"avx512": 16, "avx2": 8}.get(target, 4)
    check_softplus_and_sigmoid()
    x = make_inputs(gen, batch=2, channels=3, length=kernel.chunk_size() * 2 + 5)
    compare(x, softplus=True)
    compare(x, softplus=True, reverse=True)


def test_extreme_values(kernel, gen):
    # delta above the softplus threshold (20), decays that underflow to exactly 0,
    # large gates on both sides, and silence that lets the state decay through the
    # subnormal range (the kernel flushes subnormals to zero).
    x = make_inputs(gen, batch=1, channels=5, length=300)
    x["delta"][0, 0] = 25.0
    x["delta"][0, 1] = -30.0
    x["A"][2] = -200.0
    x["z"][0, 3] = torch.linspace(-120, 120, 300)
    x["u"][0, 4, 20:] = 0.0
    x["delta"][0, 4] = 3.0
    compare(x, softplus=True)


def test_empty_length(kernel, gen):
    x = {k: v.requires_grad_() for k, v in make_inputs(gen, length=0).items()}
    out = selective_scan(**x, delta_softplus=True, backend="cpu")
    assert out.shape == (2, 5, 0)
    out.sum().backward()
    assert x["A"].grad.abs().sum() == 0 and x["u"].grad.shape == (2, 5, 0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs(kernel, gen, dtype):
    x = {k: v.to(dtype) for k, v in make_inputs(gen, length=100).items()}
    expected, g_ref = run("reference", x, True)
    got, g_cpu = run("cpu", x, True)
    assert got.dtype == dtype
    assert_close(got, expected, 2e-2, "output")
    for name in g_ref:
        assert g_cpu[name].dtype == dtype
        assert_close(g_cpu[name], g_ref[name], 2e-2, f"grad {name}")


def test_non_contiguous_inputs(kernel, gen):
    x = make_inputs(gen, batch=2, channels=5, length=90)
    nc = {
        "u": x["u"].transpose(1, 2).contiguous().transpose(1, 2),
        "delta": torch.stack([x["delta"], x["delta"]], -1)[..., 0],
        "A": x["A"].t().contiguous().t(),
        "B": x["B"].transpose(1, 2).contiguous().transpose(1, 2),
        "C": torch.stack([x["C"], torch.zeros_like(x["C"])], -1)[..., 0],
        "D": torch.stack([x["D"], x["D"]], 1)[:, 1],
        "z": x["z"].transpose(1, 2).contiguous().transpose(1, 2),
        "delta_bias": torch.stack([x["delta_bias"], x["delta_bias"]], 1)[:, 0],
    }
    assert not nc["u"].is_contiguous() and not nc["A"].is_contiguous()
    assert not any(v.is_contiguous() for v in nc.values())
    assert all(torch.equal(nc[k], x[k]) for k in x)
    compare(nc, softplus=True)


def test_partial_requires_grad_and_no_grad(kernel, gen):
    x = make_inputs(gen, length=80)
    expected = selective_scan_reference(**x, delta_softplus=True)
    with torch.no_grad():
        assert_close(selective_scan(**x, delta_softplus=True, backend="cpu"), expected, 1e-4)
    u = x["u"].clone().requires_grad_()
    out = selective_scan(**{**x, "u": u}, delta_softplus=True, backend="cpu")
    out.sum().backward()
    u_ref = x["u"].clone().requires_grad_()
    selective_scan_reference(**{**x, "u": u_ref}, delta_softplus=True).sum().backward()
    assert_close(u.grad, u_ref.grad, 1e-4)


def test_float64_goes_to_the_reference(gen):
    x = {k: v.double() for k, v in make_inputs(gen, length=20).items()}
    got = selective_scan(**x, delta_softplus=True, backend="cpu")
    assert got.dtype == torch.float64
    assert torch.equal(got, selective_scan_reference(**x, delta_softplus=True))


def test_auto_picks_cpu_on_cpu_tensors(kernel, gen):
    x = make_inputs(gen, length=10)
    assert available_backends(x["u"])[0] == "cpu"
    assert available_backends(x["u"]).index("cpu") < available_backends(x["u"]).index("reference")


def test_auto_falls_back_to_reference_with_one_warning(gen, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    from ssamba.ops import build

    monkeypatch.setattr(build, "compile_library", broken)
    monkeypatch.setattr(scan_cpu, "_lib", None)
    monkeypatch.setattr(scan_cpu, "_load_error", None)
    monkeypatch.setattr(scan_cpu, "_warned", False)
    x = make_inputs(gen, length=30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = selective_scan(**x, delta_softplus=True)
        second = selective_scan(**x, delta_softplus=True)
        assert available_backends(x["u"])[0] == "reference"
    relevant = [w for w in caught if "fast CPU scan is unavailable" in str(w.message)]
    assert len(relevant) == 1, [str(w.message) for w in caught]
    message = str(relevant[0].message)
    assert "no compiler here" in message  # why
    assert "apt install g++" in message and "slower" in message  # what to install, what going without costs
    expected = selective_scan_reference(**x, delta_softplus=True)
    assert torch.equal(first, expected) and torch.equal(second, expected)
    with pytest.raises(RuntimeError, match="'cpu' is unavailable: .*no compiler here"):
        selective_scan(**x, delta_softplus=True, backend="cpu")


@pytest.mark.slow
def test_compiles_into_a_fresh_cache_and_reuses_it(kernel, tmp_path, monkeypatch):
    monkeypatch.setenv("SSAMBA_CACHE_DIR", str(tmp_path))
    from ssamba.ops import build

    cache = build.cache_dir()
    assert cache.is_relative_to(tmp_path)
    first = build.compile_library(scan_cpu.SOURCE, cache)
    mtime = first.stat().st_mtime_ns
    second = build.compile_library(scan_cpu.SOURCE, cache)
    assert first == second and second.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in cache.iterdir()) == sorted([first.name, ".lock"])  # no temporary files left


def test_small_inputs_run_on_one_thread(kernel):
    # Below the work threshold a second thread costs more than it saves.
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert kernel._partition(2, 384, 57)[0] == 1
        assert kernel._partition(2, 384, 513)[0] == 2
    finally:
        torch.set_num_threads(before)


def test_openmp_kernel_shares_pytorchs_thread_pool(kernel):
    # Built with -fopenmp, the kernel must bind to the libgomp PyTorch already loaded
    # (one OpenMP runtime, one pool), not load a second one whose threads would compete.
    from pathlib import Path

    maps = Path("/proc/self/maps")
    if not kernel.uses_openmp() or not maps.exists():
        pytest.skip("kernel built without OpenMP, or no /proc")
    libs = {line.split()[-1] for line in maps.read_text().splitlines() if "libgomp" in line}
    assert len(libs) == 1, libs


@pytest.mark.parametrize("where", ["kernel", "reference"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("d_state", [5, 16])
def test_pieces_with_carried_state_equal_one_scan(kernel, gen, where, reverse, d_state, monkeypatch):
    # selective_scan_with_state over consecutive pieces (pieces of 1 step, shorter and
    # longer than the kernel's chunk), each from the state the previous one left (in scan
    # order: last to first when reversed), equals one reference scan of the whole; the
    # final state is the reference's own last state.
    from ssamba import ops

    if where == "reference":  # the fallback where the kernel cannot run
        import dataclasses

        def not_here(*args):
            raise AssertionError("the kernel ran where it is unavailable")

        monkeypatch.setitem(ops._BACKENDS, "cpu", dataclasses.replace(ops._BACKENDS["cpu"], is_available=lambda u: False,
                                                                      with_state=not_here))
    chunk = kernel.chunk_size()
    length = 2 * chunk + 20
    x = make_inputs(gen, batch=2, channels=5, length=length, d_state=d_state)
    expected, last = selective_scan_reference(**x, delta_softplus=True, reverse=reverse, return_state=True)
    cuts = [0, 1, 9, 9 + chunk + 3, length]
    order = list(range(len(cuts) - 1))
    pieces, state = {}, None
    for i in (reversed(order) if reverse else order):
        part = {k: (v[..., cuts[i]:cuts[i + 1]] if v is not None and v.dim() == 3 else v) for k, v in x.items()}
        pieces[i], state = ops.selective_scan_with_state(**part, delta_softplus=True, reverse=reverse, state=state)
        assert state.shape == (2, 5, d_state) and state.dtype == torch.float32
    assert_close(torch.cat([pieces[i] for i in order], -1), expected, 1e-4, "output")
    assert_close(state, last, 1e-4, "last state")
    # a nonzero start state changes the result: it is used, not ignored
    again, _ = ops.selective_scan_with_state(**x, delta_softplus=True, reverse=reverse, state=torch.ones(2, 5, d_state))
    assert not torch.allclose(again, expected, atol=1e-3)


def test_state_shape_is_checked(gen):
    from ssamba.ops import selective_scan_with_state

    x = make_inputs(gen, batch=2, channels=5, length=8)
    with pytest.raises(ValueError, match="state must be"):
        selective_scan_with_state(**x, state=torch.zeros(2, 5, 15))


def test_the_shipped_kernel_holds_no_benchmark(kernel):
    # the roofline micro-benchmark is built from ssamba/benchmarks/csrc, not the kernel
    lib = kernel.load_library()
    assert hasattr(lib, "ssamba_scan_fwd") and not hasattr(lib, "ssamba_scan_bound")
    assert "bound" not in kernel.SOURCE.read_text()


def test_backends_declare_whether_they_carry_a_state(gen):
    # The carried-state scan is a property each backend declares in the registry: the
    # kernel and the reference have one, the exportable and GPU backends do not, and
    # asking one of those for it is a clear error, not a silent fallback.
    from ssamba import ops

    x = make_inputs(gen, batch=2, channels=5, length=8)
    assert ops.scan_carries_state("reference", x["u"]) and ops.scan_carries_state("cpu", x["u"])
    assert ops.scan_carries_state("auto", x["u"])
    assert not ops.scan_carries_state("export", x["u"])
    assert ops._BACKENDS["triton"].with_state is None and ops._BACKENDS["cuda"].with_state is None
    with pytest.raises(ValueError, match="cannot scan from a carried state"):
        ops.selective_scan_with_state(**x, backend="export")
    out, state = ops.selective_scan_with_state(**x, backend="reference")
    assert_close(out, selective_scan_reference(**x), 1e-6, "reference piece")
    assert state.shape == (2, 5, x["A"].shape[1])
