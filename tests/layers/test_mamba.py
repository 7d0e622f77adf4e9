import pytest
import torch

from ssamba.layers import BiMambaMixer, MambaBlock, mamba


def _probe(mixer, length=12, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, length, dim, generator=g)
    changed = x.clone()
    changed[:, -1] += 1.0
    with torch.no_grad():
        return mixer(x), mixer(changed)


def test_bidirectional_mixer_sees_the_future():
    torch.manual_seed(0)
    out, out_changed = _probe(BiMambaMixer(16))
    assert out.shape == (2, 12, 16)
    assert not torch.allclose(out[:, 0], out_changed[:, 0])


def test_forward_only_mixer_is_causal():
    torch.manual_seed(0)
    out, out_changed = _probe(BiMambaMixer(16, bidirectional=False))
    assert torch.allclose(out[:, :-1], out_changed[:, :-1])
    assert not torch.allclose(out[:, -1], out_changed[:, -1])


def test_backward_direction_has_its_own_parameters_and_is_used():
    torch.manual_seed(0)
    mixer = BiMambaMixer(16)
    names = {n for n, _ in mixer.named_parameters()}
    for part in ("conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight", "dt_proj.bias", "A_log", "D"):
        assert f"forward_ssm.{part}" in names and f"backward_ssm.{part}" in names
    assert "in_proj.weight" in names and "out_proj.weight" in names  # shared
    x = torch.randn(1, 10, 16)
    before = mixer(x)
    with torch.no_grad():
        mixer.backward_ssm.D.add_(1.0)
    assert not torch.allclose(before, mixer(x))


def test_direction_average_halves_the_sum():
    torch.manual_seed(0)
    averaged = BiMambaMixer(16, average_directions=True)
    summed = BiMambaMixer(16, average_directions=False)
    summed.load_state_dict(averaged.state_dict())
    x = torch.randn(1, 10, 16)
    assert torch.allclose(summed(x), 2 * averaged(x), atol=1e-6)  # out_proj has no bias


def test_vim_initialisation():
    mixer = BiMambaMixer(192)
    ssm = mixer.forward_ssm
    assert ssm.dt_rank == 12 and ssm.A_log.shape == (384, 16)
    assert torch.allclose(-torch.exp(ssm.A_log[0]), -torch.arange(1, 17).float())
    assert torch.all(ssm.D == 1)
    dt = torch.nn.functional.softplus(ssm.dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-9 and dt.max() <= 0.1 + 1e-6
    assert ssm.dt_proj.weight.abs().max() <= 12**-0.5
    assert ssm.A_log._no_weight_decay and ssm.D._no_weight_decay


def test_block_carries_the_residual_stream():
    torch.manual_seed(0)
    block = MambaBlock(16, BiMambaMixer(16))
    x = torch.randn(1, 5, 16)
    hidden, residual = block(x, None)
    assert torch.equal(residual, x)  # first block: residual = input
    hidden2, residual2 = block(hidden, residual)
    assert torch.allclose(residual2, residual + hidden)  # eval / no drop path
    assert torch.allclose(hidden2, block.mixer(block.norm(residual2)))


def _literal_mixer(mixer, hidden):
    """The bimamba-v2 mixer as Vision Mamba writes it: nn.Conv1d + nn.Linear on (B, L, .)
    layouts, and the backward direction on flipped copies, flipped back. The reference
    scan only (the oracle)."""
    import torch.nn.functional as F

    from ssamba.ops import selective_scan_reference

    def direction(ssm, x, z):  # x, z: (B, Di, L)
        length = x.shape[-1]
        x = F.silu(ssm.conv1d(x)[..., :length])
        dt, b, c = ssm.x_proj(x.transpose(1, 2)).split([ssm.dt_rank, ssm.d_state, ssm.d_state], dim=-1)
        delta = ssm.dt_proj.weight @ dt.transpose(1, 2)
        return selective_scan_reference(x, delta, -torch.exp(ssm.A_log), b.transpose(1, 2), c.transpose(1, 2),
                                        D=ssm.D, z=z, delta_bias=ssm.dt_proj.bias, delta_softplus=True)

    x, z = mixer.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)
    y = direction(mixer.forward_ssm, x, z)
    y = y + direction(mixer.backward_ssm, x.flip(-1), z.flip(-1)).flip(-1)
    return mixer.out_proj((y / 2).transpose(1, 2))


def test_mixer_matches_the_literal_flip_based_definition():
    # The mixer avoids flipped copies and layout transposes (anti-causal conv, reverse
    # scan, channel-major projections); it must compute exactly the literal definition.
    torch.manual_seed(0)
    mixer = BiMambaMixer(16, scan_backend="cpu")
    hidden = torch.randn(3, 23, 16)
    grads = []
    for fn in (mixer, lambda h: _literal_mixer(mixer, h)):
        mixer.zero_grad()
        h = hidden.clone().requires_grad_()
        out = fn(h)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((out.detach(), h.grad, {n: p.grad.clone() for n, p in mixer.named_parameters()}))
    (out, gh, gp), (ref, ref_gh, ref_gp) = grads
    assert out.shape == (3, 23, 16) and out.is_contiguous()
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()
    assert torch.allclose(gh, ref_gh, atol=1e-5)
    assert gp.keys() == ref_gp.keys()
    for name in gp:
        assert torch.allclose(gp[name], ref_gp[name], atol=1e-4), name


def test_depthwise_conv_matches_conv1d_both_ways():
    import torch.nn.functional as F

    from ssamba.ops.conv import depthwise_conv

    g = torch.Generator().manual_seed(0)
    for length in (1, 2, 3, 4, 11):
        x = torch.randn(2, 5, length, generator=g)
        w, b = torch.randn(5, 1, 4, generator=g), torch.randn(5, generator=g)
        causal = F.conv1d(x, w, b, padding=3, groups=5)[..., :length]
        flipped = F.conv1d(x.flip(-1), w, b, padding=3, groups=5)[..., :length].flip(-1)
        assert torch.allclose(depthwise_conv(x, w, b), causal, atol=1e-6)
        assert torch.allclose(depthwise_conv(x, w, b, reverse=True), flipped, atol=1e-6)
        assert torch.allclose(depthwise_conv(x, w, None), causal - b[:, None], atol=1e-6)


def test_conv_silu_gradients_match_autograd_through_conv1d():
    # The hand-written backward of SiLU(conv) against autograd through F.conv1d (and the
    # flip for the anti-causal direction), in float64, with and without a bias, on
    # sequences shorter than the kernel too; and torch.autograd.gradcheck on one case.
    import torch.nn.functional as F

    from ssamba.ops.conv import conv_silu

    g = torch.Generator().manual_seed(0)
    for length in (1, 2, 3, 4, 11):
        for reverse in (False, True):
            for with_bias in (True, False):
                x = torch.randn(2, 5, length, generator=g, dtype=torch.float64)
                w = torch.randn(5, 1, 4, generator=g, dtype=torch.float64)
                b = torch.randn(5, generator=g, dtype=torch.float64) if with_bias else None
                up = torch.randn(2, 5, length, generator=g, dtype=torch.float64)
                grads = []
                for fused in (True, False):
                    leaves = [t.clone().requires_grad_() for t in (x, w) + ((b,) if with_bias else ())]
                    xi, wi, bi = leaves[0], leaves[1], leaves[2] if with_bias else None
                    if fused:
                        out = conv_silu(xi, wi, bi, reverse)
                    else:
                        xs = xi.flip(-1) if reverse else xi
                        out = F.silu(F.conv1d(xs, wi, bi, padding=3, groups=5)[..., :length])
                        out = out.flip(-1) if reverse else out
                    (out * up).sum().backward()
                    grads.append([out.detach()] + [t.grad for t in leaves])
                for got, want in zip(*grads):
                    assert torch.allclose(got, want, atol=1e-12), (length, reverse, with_bias)
    x = torch.randn(2, 3, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 1, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    for reverse in (False, True):
        assert torch.autograd.gradcheck(lambda *t: conv_silu(*t, reverse), (x, w, b))


def test_mirrored_mixer_and_block_are_the_flipped_computation_flipped_back():
    # Layer pairing runs every other block "mirrored" instead of on flipped copies of both
    # streams; outputs and every gradient must be those of the flipped computation.
    torch.manual_seed(0)
    for bidirectional in (True, False):
        block = MambaBlock(16, BiMambaMixer(16, bidirectional=bidirectional, scan_backend="cpu"))
        hidden, residual = torch.randn(2, 19, 16), torch.randn(2, 19, 16)
        weight = torch.linspace(-1, 1, hidden.numel()).view_as(hidden)
        results = []
        for mirrored in (True, False):
            block.zero_grad()
            h, r = hidden.clone().requires_grad_(), residual.clone().requires_grad_()
            if mirrored:
                out, res = block(h, r, mirrored=True)
            else:
                out, res = block(h.flip(1), r.flip(1))
                out, res = out.flip(1), res.flip(1)
            ((out * weight).sum() + (res * weight).sum()).backward()
            results.append((out.detach(), res.detach(), h.grad, r.grad,
                            {n: p.grad.clone() for n, p in block.named_parameters()}))
        (out, res, gh, gr, gp), (ref, ref_res, ref_gh, ref_gr, ref_gp) = results
        assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4), (out - ref).abs().max()
        assert torch.equal(res, ref_res)
        assert torch.allclose(gh, ref_gh, atol=1e-5, rtol=1e-4)
        assert torch.allclose(gr, ref_gr, atol=1e-5, rtol=1e-4)
        for name in gp:
            assert torch.allclose(gp[name], ref_gp[name], atol=1e-5, rtol=1e-4), name
        # and mirroring changes the result (the scans do run the other way)
        with torch.no_grad():
            assert not torch.allclose(block(hidden, residual, mirrored=True)[0], block(hidden, residual)[0])


@pytest.mark.parametrize("carries", [True, False])
def test_inference_path_equals_the_autograd_path(carries, monkeypatch):
    # Without autograd the mixer works in tiles of batch rows (for memory); one tile and
    # several, both directions or one, mirrored or not, with a scan that carries a state
    # and one that does not (one piece of the whole length), must give the autograd
    # path's output.
    torch.manual_seed(0)
    hidden = torch.randn(2, 37, 16)
    if not carries:
        monkeypatch.setattr(mamba, "scan_carries_state", lambda backend, u: False)
    for tile_bytes, rows in ((1 << 30, 2), (4 * 32 * 37, 1)):  # both rows; one row of Di 32 x L 37
        monkeypatch.setattr(BiMambaMixer, "TILE_BYTES", tile_bytes)
        for kwargs in ({}, {"bidirectional": False}, {"average_directions": False}):
            mixer = BiMambaMixer(16, scan_backend="cpu", **kwargs)
            assert mixer.tile(2, 37, carries) == (rows, 37)
            for mirrored in (False, True):
                with torch.enable_grad():
                    ref = mixer(hidden, mirrored=mirrored)
                assert ref.requires_grad
                with torch.no_grad():
                    lean = mixer(hidden, mirrored=mirrored)
                with torch.inference_mode():
                    lean_inf = mixer(hidden, mirrored=mirrored)
                assert not lean.requires_grad and lean.shape == ref.shape
                assert torch.allclose(lean, ref.detach(), atol=1e-6, rtol=1e-4), (lean - ref).abs().max()
                assert torch.equal(lean, lean_inf)


def test_tiles_respect_the_budget():
    # A tile is the whole batch in pieces of at least MIN_PIECE tokens where that fits;
    # a large batch of short clips is cut into rows instead; without a carried state the
    # piece is the whole length.
    mixer = BiMambaMixer(192)  # Di = 384
    unit = 4 * 384
    assert mixer.tile(1, 100_000) == (1, BiMambaMixer.TILE_BYTES // unit)
    rows, piece = mixer.tile(140, 100)
    assert piece == 100 and rows * piece * unit <= BiMambaMixer.TILE_BYTES < (rows + 1) * piece * unit
    assert mixer.tile(4, 5000, carries_state=False) == (1, 5000)
    assert mixer.tile(2, 10) == (2, 10)


@pytest.mark.parametrize("piece", [1, 2, 5, 16, 36])
@pytest.mark.parametrize("kept", [0, 1, 2])
def test_sequence_pieces_equal_the_autograd_path(piece, kept, monkeypatch):
    # Long inputs run along the sequence in pieces, each scan carrying its state across
    # piece edges and the conv reading across them (pieces shorter than the conv's reach
    # of 3 included); both directions, one, mirrored or not, with the block's norm applied
    # per piece: the autograd path's output of norm(hidden). With a reuse budget of
    # nothing, of one (batch, Di, L) tensor (the backward-running direction's outputs
    # kept from the first pass) and of two (its outputs and the in_proj x rows).
    torch.manual_seed(0)
    hidden = torch.randn(2, 37, 16)
    full = 4 * 2 * 32 * 37  # bytes of one (batch 2, Di 32, L 37) fp32 tensor
    monkeypatch.setattr(BiMambaMixer, "TILE_BYTES", 4 * 2 * 32 * piece)
    monkeypatch.setattr(BiMambaMixer, "MIN_PIECE", 1)
    monkeypatch.setattr(BiMambaMixer, "REUSE_BYTES", kept * full if kept else full - 1)
    products = []
    real_matmul = mamba.channel_matmul
    monkeypatch.setattr(mamba, "channel_matmul", lambda w, x: products.append(w.shape) or real_matmul(w, x))
    norm = torch.nn.LayerNorm(16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    for kwargs in ({}, {"bidirectional": False}, {"average_directions": False}):
        mixer = BiMambaMixer(16, scan_backend="cpu", **kwargs)
        assert mixer.tile(2, 37) == (2, piece)
        for mirrored in (False, True):
            with torch.enable_grad():
                ref = mixer(norm(hidden), mirrored=mirrored)
            with torch.no_grad():
                products.clear()
                lean = mixer.infer(hidden, mirrored=mirrored, norm=norm)
                # The work done, counted in products: in_proj's x and z rows (both (32,
                # 16)) once per piece, the x rows again for a backward-running direction's
                # first pass unless kept; one x_proj product ((33, 32)) per piece scanned.
                pieces = -(-37 // piece)
                directions = 2 if kwargs.get("bidirectional", True) else 1
                has_reverse = directions == 2 or mirrored
                rows = sum(1 for shape in products if shape == (32, 16))
                scans = sum(1 for shape in products if shape == (33, 32))
                if not has_reverse:
                    assert (rows, scans) == (2 * pieces, pieces)
                elif kept == 0:  # the first pass for states only, both directions in the second
                    assert (rows, scans) == (3 * pieces - 1, (directions + 1) * pieces - 1)
                elif kept == 1:  # the backward-running direction scanned once, rows recomputed
                    assert (rows, scans) == (3 * pieces, directions * pieces)
                else:  # and its rows kept for the second pass
                    assert (rows, scans) == (2 * pieces, directions * pieces)
                added = mixer.infer(hidden, mirrored=mirrored, out=torch.ones_like(hidden), norm=norm)
            assert torch.allclose(lean, ref.detach(), atol=1e-6, rtol=1e-4), (lean - ref).abs().max()
            assert torch.allclose(added, lean + 1, atol=1e-6)


def test_projections_backward_give_contiguous_gradients_equal_to_autograd():
    # in_proj and out_proj under autograd: the gradients of the plain bmm formulation
    # (gradcheck in float64), and those reaching the tokens and the scans' output
    # contiguous in the layout each was made in (no transposing copies downstream).
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=True)
    w_x, w_z = (torch.randn(4, 5, dtype=torch.float64, requires_grad=True) for _ in range(2))
    y = torch.randn(3, 4, 7, dtype=torch.float64, requires_grad=True)
    w_out = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(mamba._InProjection.apply, (hidden, w_x, w_z))
    assert torch.autograd.gradcheck(mamba._OutProjection.apply, (y, w_out))
    x, z = mamba._InProjection.apply(hidden, w_x, w_z)
    assert torch.allclose(x, torch.einsum("od,bld->bol", w_x, hidden))
    assert torch.allclose(z, torch.einsum("od,bld->bol", w_z, hidden))
    out = mamba._OutProjection.apply(y, w_out)
    assert torch.allclose(out, torch.einsum("oi,bil->blo", w_out, y))
    (x.sum() + (z * z).sum()).backward()
    out.pow(2).sum().backward()
    assert hidden.grad.is_contiguous() and y.grad.is_contiguous()


def test_bf16_autocast_gives_every_parameter_a_gradient_close_to_fp32():
    import ssamba

    torch.manual_seed(0)
    model = ssamba.create_model("ssamba_test", input_tdim=64)
    spec = torch.randn(2, 64, 128, generator=torch.Generator().manual_seed(1))

    def grads(autocast: bool):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model.forward_features(spec)
        out.float().pow(2).mean().backward()
        return out.dtype, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    _, low = grads(True)
    _, full = grads(False)
    assert any(not torch.equal(low[n], full[n]) for n in full)  # autocast did act
    unmasked = {n for n, p in model.named_parameters() if p.requires_grad} - {"mask_embed"}  # no mask given
    assert low.keys() == full.keys() == unmasked
    largest = max(g.abs().max() for g in full.values())
    for name in full:
        assert low[name].dtype == torch.float32, name  # the weights' gradients arrive in the weights' dtype
        scale = full[name].abs().max()
        if scale > 1e-4 * largest:  # (the class tokens' gradient here is rounding noise, ~1e-9)
            assert ((low[name] - full[name]).abs().max() / scale).item() < 0.1, name
