"""One sweep over every registered preset, plus the properties each family promises."""

import pytest
import torch

import ssamba
from ssamba.models import SSAMBA, SSAST, get_config

FULL_SIZE = [n for n in ssamba.list_models() if "_test" not in n]
FRAMES = 64  # a short input keeps the full-size sweep fast; position embeddings follow the grid


def _spec(gen, batch=2, frames=FRAMES):
    return torch.randn(batch, frames, 128, generator=gen)


@pytest.mark.parametrize("name", ssamba.list_models())
def test_every_preset_shapes_no_nan_and_gradients_reach_every_parameter(name, gen):
    torch.manual_seed(0)
    # no stochastic depth: with two clips it drops a whole block for both now and then
    # (how often depends on the random stream), and that block then gets no gradient
    model = ssamba.create_model(name, num_classes=5, drop_path_rate=0.0)
    model.train()
    spec = _spec(gen)
    grid = model.patch_grid(FRAMES)
    mask = torch.zeros(2, grid[0] * grid[1], dtype=torch.bool)
    mask[:, ::3] = True  # so that the mask embedding is used

    tokens = model.forward_features(spec, mask)
    assert tokens.shape == (2, model.num_prefix_tokens + grid[0] * grid[1], model.config.embed_dim)
    logits = model.forward_head(tokens)
    assert logits.shape == (2, 5)
    assert torch.isfinite(tokens).all() and torch.isfinite(logits).all()

    (logits.square().mean() + tokens.mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


# Encoder parameters: patch embedding + class token(s) + position embedding of the
# pretraining grid (512 patches) + blocks + final norm; no mask embedding, no heads.
# The SSAMBA figures equal the official state dicts' encoder entries exactly
# (shared/spec/official_keys: 6,922,176 / 25,345,920 / 96,698,112).
SSAMBA_ENCODER = {"ssamba_tiny": 6_922_176, "ssamba_small": 25_345_920, "ssamba_base": 96_698_112}
SPEC_SSAMBA = {"ssamba_tiny": 6.9e6, "ssamba_small": 25.4e6, "ssamba_base": 96.7e6}
# SSAST's published sizes (~6 / 23 / 89 M) count the whole official pretraining state
# dict: encoder + DeiT's two unused ImageNet heads + the two pretraining MLP heads +
# mask embedding (+ two int scalars). Official totals: 6,046,290 / 22,854,354 / 88,763,346.
SPEC_SSAST = {"tiny": 6e6, "small": 23e6, "base": 89e6}


def encoder_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("head.", "mask_embed")))


@pytest.mark.parametrize("name", sorted(SSAMBA_ENCODER))
def test_ssamba_parameter_counts(name):
    count = encoder_params(ssamba.create_model(name))
    assert count == SSAMBA_ENCODER[name]
    assert abs(count / SPEC_SSAMBA[name] - 1) < 0.02


@pytest.mark.parametrize("size", sorted(SPEC_SSAST))
@pytest.mark.parametrize("kind", ["patch", "frame"])
def test_ssast_parameter_counts(size, kind):
    model = ssamba.create_model(f"ssast_{size}_{kind}")
    d = model.config.embed_dim
    imagenet_heads = 2 * (1000 * d + 1000)
    pretraining_heads = 2 * ((d * d + d) + (256 * d + 256))
    official_total = encoder_params(model) + imagenet_heads + pretraining_heads + d + 2
    assert abs(official_total / SPEC_SSAST[size] - 1) < 0.02
    official = {"tiny": 6_046_290, "small": 22_854_354, "base": 88_763_346}
    assert official_total == official[size]


def _first_token_sensitivity(model, gen, frames=FRAMES) -> float:
    spec = _spec(gen, batch=1, frames=frames)
    changed = spec.clone()
    changed[:, -1] += 3.0  # only the last time frame
    model.eval()
    with torch.no_grad():
        return (model.forward_features(spec)[:, 0] - model.forward_features(changed)[:, 0]).abs().max().item()


@pytest.mark.parametrize("name", ssamba.list_models())
def test_last_frame_reaches_first_token(name, gen):
    torch.manual_seed(0)
    assert _first_token_sensitivity(ssamba.create_model(name), gen) > 1e-5


@pytest.mark.parametrize("name", ["ssamba_test", "ssamba_tiny"])
def test_unidirectional_option_does_not(name, gen):
    torch.manual_seed(0)
    model = ssamba.create_model(name, use_bidirectional_mixer=False, use_layer_pairing=False)
    assert _first_token_sensitivity(model, gen) == 0.0


def test_each_direction_mechanism_alone_is_bidirectional(gen):
    torch.manual_seed(0)
    pairing_only = ssamba.create_model("ssamba_test", use_bidirectional_mixer=False)
    mixer_only = ssamba.create_model("ssamba_test", use_layer_pairing=False)
    assert _first_token_sensitivity(pairing_only, gen) > 1e-5
    assert _first_token_sensitivity(mixer_only, gen) > 1e-5


def test_presets_reproduce_the_official_options():
    for size, dim in [("tiny", 192), ("small", 384), ("base", 768)]:
        c = get_config(f"ssamba_{size}")
        assert (c.embed_dim, c.depth, c.d_state, c.d_conv, c.expand) == (dim, 24, 16, 4, 2)
        assert c.use_layer_pairing and c.use_double_final_norm and c.use_direction_average
        assert c.use_cls_token and c.norm == "layernorm" and c.drop_path_rate == 0.1
        assert (c.patch_size, c.patch_stride, c.input_tdim) == ((16, 16), (16, 16), 1024)
    assert get_config("ssast_base_frame").patch_size == (128, 2)
    assert get_config("ssast_small_patch").num_heads == 6


def test_quirk_options_change_the_computation(gen):
    torch.manual_seed(0)
    official = ssamba.create_model("ssamba_test").eval()
    spec = _spec(gen, batch=1)
    with torch.no_grad():
        reference = official.forward_features(spec)
        for option in ("use_layer_pairing", "use_double_final_norm", "use_direction_average"):
            variant = ssamba.create_model("ssamba_test", **{option: False}).eval()
            variant.load_state_dict(official.state_dict())
            assert not torch.allclose(variant.forward_features(spec), reference), option


def test_double_final_norm_is_the_norm_applied_twice(gen):
    torch.manual_seed(0)
    twice = ssamba.create_model("ssamba_test").eval()
    once = ssamba.create_model("ssamba_test", use_double_final_norm=False).eval()
    once.load_state_dict(twice.state_dict())
    spec = _spec(gen, batch=1)
    with torch.no_grad():
        assert torch.allclose(twice.forward_features(spec), twice.norm_f(once.forward_features(spec)), atol=1e-6)


def test_ssast_explicit_attention_equals_sdpa(gen):
    torch.manual_seed(0)
    sdpa = ssamba.create_model("ssast_test_patch").eval()
    explicit = ssamba.create_model("ssast_test_patch", attention="explicit").eval()
    explicit.load_state_dict(sdpa.state_dict())
    spec = _spec(gen)
    with torch.no_grad():
        assert torch.allclose(sdpa.forward_features(spec), explicit.forward_features(spec), atol=1e-5)


def test_pooling_choices(gen):
    torch.manual_seed(0)
    mean = ssamba.create_model("ssast_test_patch", num_classes=3).eval()
    tokens = torch.randn(2, 2 + 32, 32, generator=gen)
    assert torch.allclose(mean.head.pool(tokens), tokens[:, 2:].mean(1))
    cls = ssamba.create_model("ssast_test_patch", num_classes=3, pooling="cls")
    assert torch.allclose(cls.head.pool(tokens), tokens[:, :2].mean(1))
    ssamba_cls = ssamba.create_model("ssamba_test", num_classes=3, pooling="cls")
    assert torch.allclose(ssamba_cls.head.pool(tokens), tokens[:, 0])


def test_no_weight_decay_tags():
    names = ssamba.create_model("ssamba_test").no_weight_decay()
    assert {"pos_embed", "cls_tokens", "mask_embed"} <= names
    assert "layers.0.mixer.forward_ssm.A_log" in names and "layers.0.mixer.backward_ssm.D" in names
    assert not any(n.endswith("in_proj.weight") for n in names)


def test_families_and_fine_tuning_geometry():
    model = ssamba.create_model("ssamba_tiny", patch_stride=(10, 10), input_tdim=128, num_classes=35)
    assert isinstance(model, SSAMBA) and model.grid == (12, 12)
    assert model.pos_embed.shape == (1, 145, 192)  # as in the official SC checkpoint
    assert isinstance(ssamba.create_model("ssast_tiny_patch"), SSAST)
    assert ssamba.create_model("ssast_tiny_patch").pos_embed.shape == (1, 514, 192)


@pytest.mark.parametrize("name, pieces", [("ssamba_test", False), ("ssamba_test", True), ("mambaout_test", False)])
@pytest.mark.parametrize("pairing", [True, False])
def test_ssamba_inference_path_equals_the_autograd_path(name, pairing, pieces, gen, monkeypatch):
    # Under no_grad in eval, SSAMBA (and MambaOut, its blocks without the SSM) runs lean
    # (in-place layer pairs; mixers in tiles of batch rows, or along the sequence in
    # pieces); hidden states and outputs must be those of the autograd path.
    from ssamba.layers import BiMambaMixer

    if pieces:  # 33 tokens in pieces of 5 (batch 2, Di = 64)
        monkeypatch.setattr(BiMambaMixer, "TILE_BYTES", 4 * 2 * 64 * 5)
        monkeypatch.setattr(BiMambaMixer, "MIN_PIECE", 1)
    else:  # one batch row per tile
        monkeypatch.setattr(BiMambaMixer, "TILE_BYTES", 4 * 64 * 33)
    model = ssamba.create_model(name, use_layer_pairing=pairing).eval()
    spec = torch.randn(2, 64, 128, generator=gen)
    with torch.enable_grad():
        ref_states: list = []
        ref = model.encode(model.embed(spec), ref_states)
    with torch.no_grad():
        states: list = []
        out = model.encode(model.embed(spec), states)
    assert ref.requires_grad and not out.requires_grad
    assert torch.allclose(out, ref.detach(), atol=1e-5, rtol=1e-4), (out - ref).abs().max()
    assert len(states) == len(ref_states) > 0
    for a, b in zip(states, ref_states):
        assert torch.allclose(a, b.detach(), atol=1e-5, rtol=1e-4)
