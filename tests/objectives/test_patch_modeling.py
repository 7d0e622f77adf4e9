import pytest
import torch

import ssamba
from ssamba.objectives import MaskedPatchModeling, PatchModelingConfig, info_nce, patchify


def loop_info_nce(pred, target, softmax):
    """Per-clip loop after the official code: total = target @ pred^T."""
    lsoftmax = torch.nn.LogSoftmax(dim=-1)
    nce, correct, batch, n = 0.0, 0, pred.shape[0], pred.shape[1]
    for i in range(batch):
        total = target[i] @ pred[i].T  # (N_target, N_pred)
        if softmax == "paper":
            total_for_loss = total.T  # each prediction's scores over the targets
        else:
            total_for_loss = total
        nce = nce + torch.sum(torch.diag(lsoftmax(total_for_loss)))
        # the official count: softmax over the last axis (each target's row), argmax over targets
        correct += torch.sum(torch.argmax(total.softmax(dim=-1), dim=0) == torch.arange(n)).item()
    return nce / (-1.0 * batch * n), correct / (batch * n)


@pytest.mark.parametrize("softmax", ["official", "paper"])
def test_info_nce_equals_per_clip_loop(softmax, gen):
    pred = torch.randn(3, 10, 256, generator=gen)
    target = pred + 0.8 * torch.randn(3, 10, 256, generator=gen)
    loss, acc = info_nce(pred, target, softmax)
    want_loss, want_acc = loop_info_nce(pred, target, softmax)
    assert torch.allclose(loss, want_loss, rtol=1e-5)
    assert acc.item() == pytest.approx(want_acc)


def test_official_and_raw_accuracy_differ_and_raw_is_the_plain_argmax(gen):
    # targets of very different norms (loud and quiet patches): a few loud ones win the raw
    # argmax of most columns; normalising each target's row over the predictions first
    # (the official count) undoes that
    target = torch.randn(4, 50, 32, generator=gen) * torch.rand(4, 50, 1, generator=gen).pow(4) * 10
    pred = torch.nn.functional.normalize(target, dim=-1) * 3 + 0.5 * torch.randn(4, 50, 32, generator=gen)
    _, official = info_nce(pred, target)
    _, raw = info_nce(pred, target, accuracy="raw")
    scores = target @ pred.transpose(1, 2)
    assert raw.item() == pytest.approx((scores.argmax(1) == torch.arange(50)).float().mean().item())
    assert official.item() == pytest.approx(loop_info_nce(pred, target, "official")[1])
    assert official.item() > raw.item() + 0.25
    with pytest.raises(ValueError, match="nce_accuracy"):
        info_nce(pred, target, accuracy="approximate")


def test_the_two_softmax_axes_differ(gen):
    pred, target = torch.randn(2, 10, 16, generator=gen), torch.randn(2, 10, 16, generator=gen)
    assert not torch.allclose(info_nce(pred, target, "official")[0], info_nce(pred, target, "paper")[0])
    with pytest.raises(ValueError, match="nce_softmax"):
        info_nce(pred, target, "sideways")


def test_patchify_token_order(gen):
    spec = torch.randn(2, 64, 128, generator=gen)  # (B, T, F)
    patches = patchify(spec, (16, 16))  # (B, 8 * 4, 256)
    assert patches.shape == (2, 32, 256)
    f, t = 2, 3  # token index f * T' + t
    block = spec[:, t * 16:(t + 1) * 16, f * 16:(f + 1) * 16].transpose(1, 2)  # (B, F16, T16)
    assert torch.equal(patches[:, f * 4 + t], block.reshape(2, 256))


def _setup(**options):
    torch.manual_seed(0)
    encoder = ssamba.create_model("ssamba_test")
    objective = MaskedPatchModeling(PatchModelingConfig(num_masked=8, **options), 32, (16, 16))
    return encoder, objective


def test_objective_returns_scalars_and_trains_every_part(gen):
    encoder, objective = _setup()
    out = objective(encoder, torch.randn(2, 64, 128, generator=gen), torch.Generator().manual_seed(0))
    assert set(out) == {"loss", "nce", "acc", "mse"} and all(v.dim() == 0 for v in out.values())
    assert torch.allclose(out["loss"], out["nce"] + 10 * out["mse"])
    out["loss"].backward()
    for module in (encoder, objective):
        assert all(p.grad is not None for p in module.parameters())
    assert encoder.mask_embed.grad.abs().sum() > 0


def test_single_pass_uses_one_mask_for_both(gen, monkeypatch):
    spec = torch.randn(2, 64, 128, generator=gen)
    for separate, passes in ((True, 2), (False, 1)):
        encoder, objective = _setup(use_separate_passes=separate)
        calls = []
        original = encoder.forward_features
        monkeypatch.setattr(encoder, "forward_features", lambda s, m: calls.append(m) or original(s, m))
        objective(encoder, spec, torch.Generator().manual_seed(0))
        assert len(calls) == passes
        if passes == 2:
            assert not torch.equal(calls[0], calls[1])


def test_single_objective_variants(gen):
    spec = torch.randn(2, 64, 128, generator=gen)
    encoder, nce_only = _setup(use_mse=False)
    assert set(nce_only(encoder, spec, torch.Generator())) == {"loss", "nce", "acc"}
    encoder, mse_only = _setup(use_nce=False)
    assert set(mse_only(encoder, spec, torch.Generator())) == {"loss", "mse"}
    with pytest.raises(ValueError, match="at least one"):
        _setup(use_nce=False, use_mse=False)


def test_frame_models_use_random_masking_and_refuse_overlapping_patches(gen):
    objective = MaskedPatchModeling(PatchModelingConfig(num_masked=8), 32, (128, 2))
    assert not objective.use_cluster
    encoder = ssamba.create_model("ssamba_test", patch_stride=(10, 10))
    square = MaskedPatchModeling(PatchModelingConfig(num_masked=8), 32, (16, 16))
    with pytest.raises(ValueError, match="non-overlapping"):
        square(encoder, torch.randn(1, 64, 128), torch.Generator())


def test_masking_names_dispatch_to_their_generators(monkeypatch):
    from ssamba.objectives import masking, patch_modeling

    used = []
    for name in ("official_mask", "cluster_mask", "random_mask"):
        original = getattr(masking, name)
        monkeypatch.setattr(patch_modeling, name, lambda *a, _f=original, _n=name, **k: used.append(_n) or _f(*a, **k))
    g = torch.Generator().manual_seed(0)
    cases = [("official", (8, 4), "official_mask"), ("official", (1, 32), "random_mask"),  # frames: uniform
             ("cluster", (8, 4), "cluster_mask"), ("random", (8, 4), "random_mask"), ("auto", (8, 4), "cluster_mask")]
    for name, grid, expected in cases:
        objective = MaskedPatchModeling(PatchModelingConfig(num_masked=8, masking=name), 32, (16, 16))
        used.clear()
        mask = objective.draw_mask(2, grid, g, torch.device("cpu"))
        assert used == [expected] and mask.shape == (2, grid[0] * grid[1])
    assert PatchModelingConfig().masking == "official" and PatchModelingConfig().nce_accuracy == "official"
    with pytest.raises(ValueError, match="nce_accuracy"):
        MaskedPatchModeling(PatchModelingConfig(nce_accuracy="loose"), 32, (16, 16))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_info_nce_scores_stay_fp32_under_autocast(gen, dtype):
    pred, target = torch.randn(2, 12, 32, generator=gen) * 30, torch.randn(2, 12, 32, generator=gen) * 30
    want = info_nce(pred, target)
    with torch.autocast("cpu", dtype=dtype):
        got = info_nce(pred, target)
    assert got[0].dtype == torch.float32
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    with torch.autocast("cpu", dtype=dtype):  # what autocast alone would have done: other scores
        rounded = (target @ pred.transpose(1, 2)).float()
    assert not torch.equal(rounded, target @ pred.transpose(1, 2))
