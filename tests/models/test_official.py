"""Official SSAMBA / SSAST checkpoints: conversion, detection, errors, and the official math.

The layouts in ``official_keys/`` (names, shapes, dtypes of the state dicts the official
code saves) come from ``shared/spec/official_keys``. Checkpoints here are synthetic:
random tensors under those names, saved with ``torch.save`` as the official scripts do.
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ssamba
from ssamba.models.official import (
    OfficialCheckpointError,
    convert_official,
    load_objective_state,
    write_converted,
)
from ssamba.ops import selective_scan_reference

KEYS_DIR = Path(__file__).parent / "official_keys"
LAYOUTS = sorted(p.stem for p in KEYS_DIR.glob("*.json"))
IGNORED = {"v.head.weight", "v.head.bias", "v.head_dist.weight", "v.head_dist.bias",
           "p_input_fdim", "p_input_tdim"}


@pytest.fixture
def one_thread():
    """Forward passes here are small; one thread keeps them fast on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_layout(name: str) -> dict:
    return json.loads((KEYS_DIR / f"{name}.json").read_text())


def synth_checkpoint(layout: dict, seed: int = 0) -> OrderedDict:
    """Random tensors with the layout's names, shapes and dtypes (``module.`` included)."""
    gen = torch.Generator().manual_seed(seed)
    args = layout["settings"]["args"]
    state = OrderedDict()
    for name, shape, dtype in layout["keys"]:
        if dtype == "int64":
            state[name] = torch.tensor(args["input_fdim"] if name.endswith("fdim") else args["input_tdim"])
        else:
            state[name] = torch.randn(shape, generator=gen)
    return state


# An independent statement of the README's key map: official name -> (where, our name, cls slot).
_SSM = {"A_log": "A_log", "D": "D", "conv1d.weight": "conv1d.weight", "conv1d.bias": "conv1d.bias",
        "x_proj.weight": "x_proj.weight", "dt_proj.weight": "dt_proj.weight", "dt_proj.bias": "dt_proj.bias"}
_SSM_B = {"A_b_log": "A_log", "D_b": "D", "conv1d_b.weight": "conv1d.weight", "conv1d_b.bias": "conv1d.bias",
          "x_proj_b.weight": "x_proj.weight", "dt_proj_b.weight": "dt_proj.weight",
          "dt_proj_b.bias": "dt_proj.bias"}


def expected_target(key: str):
    key = key.removeprefix("module.")
    if key in IGNORED:
        return None
    if key == "v.cls_token":
        return "model", "cls_tokens", 0
    if key == "v.dist_token":
        return "model", "cls_tokens", 1
    if key == "mask_embed":
        return "model", "mask_embed", None
    if m := re.fullmatch(r"(c|g)predlayer\.(.*)", key):
        return "objective", ("nce_head." if m.group(1) == "c" else "mse_head.") + m.group(2), None
    if key.startswith("mlp_head."):
        return "model", key.replace("mlp_head.0", "head.norm").replace("mlp_head.1", "head.fc"), None
    if m := re.fullmatch(r"v\.layers\.(\d+)\.mixer\.(.*)", key):
        i, rest = m.groups()
        if rest in _SSM:
            return "model", f"layers.{i}.mixer.forward_ssm.{_SSM[rest]}", None
        if rest in _SSM_B:
            return "model", f"layers.{i}.mixer.backward_ssm.{_SSM_B[rest]}", None
        return "model", f"layers.{i}.mixer.{rest}", None  # in_proj / out_proj, shared
    assert key.startswith("v."), key
    return "model", key[2:], None


def check_every_tensor_arrived(converted, official: dict) -> None:
    ours = converted.model.state_dict()
    objective = converted.objective_state or {}
    filled = set()
    for key, tensor in official.items():
        target = expected_target(key)
        if target is None:
            continue
        where, name, slot = target
        got = (ours if where == "model" else objective)[name]
        if slot is not None:
            got = got[:, slot:slot + 1]
        assert torch.equal(got, tensor), key
        filled.add((where, name))
    untouched = {n for n in ours if ("model", n) not in filled}
    stage_finetune = any(k.startswith("module.mlp_head") for k in official)
    assert untouched == ({"mask_embed"} if stage_finetune else set())
    assert {n for w, n in filled if w == "objective"} == set(objective)


def expected_settings(layout: dict) -> dict:
    args = layout["settings"]["args"]
    family = layout["model"].split("_")[0]
    pretrain = args["pretrain_stage"]
    return dict(
        family=family,
        size=args["model_size"],
        stage="pretrain" if pretrain else "finetune",
        patch_size=(args["fshape"], args["tshape"]),
        patch_stride=(args["fstride"], args["tstride"]),
        input_fdim=args["input_fdim"],
        input_tdim=args["input_tdim"],
        num_classes=0 if pretrain else args["label_dim"],
        pretrain_input=(args["input_fdim"], args["input_tdim"]) if pretrain else None,
        embed_dim={"tiny": 192, "small": 384, "base": 768}[args["model_size"]],
        depth=24 if family == "ssamba" else 12,
    )


@pytest.mark.parametrize("name", LAYOUTS)
def test_synthetic_official_checkpoint_converts(name, tmp_path):
    layout = load_layout(name)
    official = synth_checkpoint(layout)
    assert len(official) == layout["num_keys"]
    path = tmp_path / "official.pth"
    torch.save(official, path)
    converted = convert_official(path)
    info, config = converted.info, converted.model.config

    for field, value in expected_settings(layout).items():
        assert getattr(info, field) == value, field
    for field in ("patch_size", "patch_stride", "input_fdim", "input_tdim", "num_classes", "embed_dim", "depth"):
        assert getattr(config, field) == getattr(info, field), field
    assert set(info.ignored_keys) == {k.removeprefix("module.") for k in official} & IGNORED
    assert info.num_keys == layout["num_keys"]
    if info.family == "ssamba":
        assert (info.norm, info.bimamba) == ("layernorm", "v2")
        assert config.norm == "layernorm" and config.use_bidirectional_mixer
        assert config.use_layer_pairing and config.use_double_final_norm and config.use_direction_average
        assert config.use_cls_token and config.pooling == "mean"
        assert (config.d_state, config.d_conv, config.expand) == (16, 4, 2)
        assert config.dt_rank == math.ceil(info.embed_dim / 16)
    else:
        assert info.num_heads == {192: 3, 384: 6, 768: 12}[info.embed_dim] == config.num_heads
        assert config.num_prefix_tokens == 2
    kind = "frame" if info.patch_size == (128, 2) else "patch"
    assert info.preset == (f"ssamba_{info.size}" if info.family == "ssamba" else f"ssast_{info.size}_{kind}")
    assert (converted.objective_state is None) == (info.stage == "finetune")
    expected_dataset = "speechcommands" if info.stage == "finetune" else "audioset"
    assert info.dataset == expected_dataset
    assert converted.model.frontend_config.target_length == info.input_tdim
    check_every_tensor_arrived(converted, official)
    with torch.device("meta"):  # parameter tags (no weight decay on A_log, D, tokens...) survive
        fresh = ssamba.models.model_from_config(config)
    assert converted.model.no_weight_decay() == fresh.no_weight_decay() != set()


@pytest.mark.parametrize("name", ["ssamba_tiny_finetune_sc35", "ssast_tiny_finetune_sc35_patch"])
def test_converted_speech_commands_model_gives_35_logits(name, tmp_path, one_thread):
    official = synth_checkpoint(load_layout(name))
    path = tmp_path / "sc.pth"
    torch.save(official, path)
    model = ssamba.load_model(path).eval()  # converted on the fly
    with torch.no_grad():
        logits = model(torch.randn(2, 128, 128))
    assert logits.shape == (2, 35)
    assert torch.isfinite(logits).all()


def test_written_directory_is_a_normal_model_with_objective_heads(tmp_path):
    from ssamba.objectives import MaskedPatchModeling, PatchModelingConfig

    official = synth_checkpoint(load_layout("ssamba_tiny_pretrain_patch16"))
    path = tmp_path / "amba_tiny_400.pth"
    torch.save(official, path)
    converted = convert_official(path)
    out = write_converted(converted, tmp_path / "converted")
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.json", "objective.safetensors",
                                               "objective.json", "conversion.json"}
    model = ssamba.load_model(out)
    for key, value in converted.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert model.frontend_config.mean == pytest.approx(-4.2677393)
    record = json.loads((out / "conversion.json").read_text())
    assert record["family"] == "ssamba" and record["stage"] == "pretrain"

    objective = MaskedPatchModeling(PatchModelingConfig(), embed_dim=192, patch_size=(16, 16))
    objective.load_state_dict(load_objective_state(out), strict=True)
    assert torch.equal(objective.nce_head[0].weight, official["module.cpredlayer.0.weight"])
    assert torch.equal(objective.mse_head[2].bias, official["module.gpredlayer.2.bias"])

    # converting a fine-tuned file into the same folder drops the stale heads
    sc = tmp_path / "sc.pth"
    torch.save(synth_checkpoint(load_layout("ssast_tiny_finetune_sc35_patch")), sc)
    write_converted(convert_official(sc), out)
    assert load_objective_state(out) is None
    assert ssamba.load_model(out).family == "ssast"


# -- a tiny official-layout SSAMBA and the official forward, written out -------------
def tiny_official_ssamba(dim=32, depth=4, rows=145, num_classes=5, seed=0, prefix="module.") -> OrderedDict:
    """Official SSAMBA (fine-tuned) names with small, well-scaled random values."""
    gen = torch.Generator().manual_seed(seed)
    di, n, r, k = 2 * dim, 16, math.ceil(dim / 16), 4

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen) * scale

    sd = OrderedDict()
    sd["v.cls_token"] = rnd(1, 1, dim, scale=0.5)
    sd["v.pos_embed"] = rnd(1, rows, dim, scale=0.5)
    sd["v.patch_embed.proj.weight"] = rnd(dim, 1, 16, 16, scale=1 / 16)
    sd["v.patch_embed.proj.bias"] = rnd(dim, scale=0.1)
    sd["v.head.weight"], sd["v.head.bias"] = rnd(1000, dim), rnd(1000)
    for i in range(depth):
        p = f"v.layers.{i}.mixer."
        for sfx, a_name, d_name in (("", "A_log", "D"), ("_b", "A_b_log", "D_b")):
            sd[p + a_name] = torch.log(torch.arange(1, n + 1).float()).repeat(di, 1) + rnd(di, n, scale=0.1)
            sd[p + d_name] = 1 + rnd(di, scale=0.1)
        sd[p + "in_proj.weight"] = rnd(2 * di, dim, scale=dim ** -0.5)
        for sfx in ("", "_b"):
            sd[p + f"conv1d{sfx}.weight"] = rnd(di, 1, k, scale=0.5)
            sd[p + f"conv1d{sfx}.bias"] = rnd(di, scale=0.1)
            sd[p + f"x_proj{sfx}.weight"] = rnd(r + 2 * n, di, scale=di ** -0.5)
            sd[p + f"dt_proj{sfx}.weight"] = rnd(di, r, scale=r ** -0.5)
            sd[p + f"dt_proj{sfx}.bias"] = torch.log(torch.expm1(torch.rand(di, generator=gen) * 0.1 + 1e-3))
        sd[p + "out_proj.weight"] = rnd(dim, di, scale=di ** -0.5)
        sd[f"v.layers.{i}.norm.weight"] = 1 + rnd(dim, scale=0.1)
        sd[f"v.layers.{i}.norm.bias"] = rnd(dim, scale=0.1)
    sd["v.norm_f.weight"], sd["v.norm_f.bias"] = 1 + rnd(dim, scale=0.1), rnd(dim, scale=0.1)
    sd["mlp_head.0.weight"], sd["mlp_head.0.bias"] = 1 + rnd(dim, scale=0.1), rnd(dim, scale=0.1)
    sd["mlp_head.1.weight"], sd["mlp_head.1.bias"] = rnd(num_classes, dim, scale=dim ** -0.5), rnd(num_classes)
    return OrderedDict((prefix + key, value) for key, value in sd.items())


def official_ssamba_logits(sd: dict, spec: torch.Tensor, stride=(10, 10)) -> torch.Tensor:
    """AMBAModel.finetuningavgtok with Vim's Block and bimamba-v2 Mamba, eval mode, from the README."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    dim = sd["v.cls_token"].shape[-1]
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("v.layers."))
    batch = spec.shape[0]

    def layer_norm(h, name):  # RMSNorm (weight only) in rms_norm=True builds
        if name + ".bias" not in sd:
            return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5) * sd[name + ".weight"]
        return F.layer_norm(h, (dim,), sd[name + ".weight"], sd[name + ".bias"], eps=1e-5)

    def mamba_inner_no_out_proj(xz, p, b):  # mamba_inner_fn_no_out_proj, xz: (B, 2Di, L)
        length = xz.shape[-1]
        x, z = xz.chunk(2, dim=1)
        w = sd[p + f"conv1d{b}.weight"]
        x = F.silu(F.conv1d(x, w, sd[p + f"conv1d{b}.bias"], padding=w.shape[-1] - 1, groups=w.shape[0])[..., :length])
        d_inner, rank = sd[p + f"dt_proj{b}.weight"].shape
        n = sd[p + ("A_b_log" if b else "A_log")].shape[1]
        x_dbl = F.linear(x.transpose(1, 2).reshape(-1, d_inner), sd[p + f"x_proj{b}.weight"])  # ((b l), r+2N)
        delta = (sd[p + f"dt_proj{b}.weight"] @ x_dbl[:, :rank].t()).reshape(d_inner, batch, length).permute(1, 0, 2)
        bb = x_dbl[:, rank:rank + n].reshape(batch, length, n).transpose(1, 2)
        cc = x_dbl[:, -n:].reshape(batch, length, n).transpose(1, 2)
        a = -torch.exp(sd[p + ("A_b_log" if b else "A_log")])
        return selective_scan_reference(x, delta, a, bb, cc, D=sd[p + ("D_b" if b else "D")], z=z,
                                        delta_bias=sd[p + f"dt_proj{b}.bias"], delta_softplus=True)

    def mixer(h, i):
        p = f"v.layers.{i}.mixer."
        length = h.shape[1]
        xz = (sd[p + "in_proj.weight"] @ h.reshape(-1, dim).t()).reshape(-1, batch, length).permute(1, 0, 2)
        out = mamba_inner_no_out_proj(xz, p, "")
        if p + "A_b_log" not in sd:  # bimamba_type "none": mamba_inner_fn, one direction
            return F.linear(out.transpose(1, 2), sd[p + "out_proj.weight"])
        out_b = mamba_inner_no_out_proj(xz.flip(-1), p, "_b")
        return F.linear((out + out_b.flip(-1)).transpose(1, 2) / 2, sd[p + "out_proj.weight"])  # if_devide_out

    def block(h, residual, i):  # Vim Block, fused_add_norm False, drop_path inactive
        residual = h if residual is None else residual + h
        return mixer(layer_norm(residual, f"v.layers.{i}.norm"), i), residual

    image = spec.unsqueeze(1).transpose(2, 3)  # (B, 1, F, T)
    x = F.conv2d(image, sd["v.patch_embed.proj.weight"], sd["v.patch_embed.proj.bias"], stride=stride)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["v.cls_token"].expand(batch, -1, -1), x], dim=1) + sd["v.pos_embed"]
    hidden, residual = x, None
    for i in range(depth // 2):  # if_bidirectional: layer pairs
        h_f, r_f = block(hidden, residual, 2 * i)
        h_b, r_b = block(hidden.flip(1), None if residual is None else residual.flip(1), 2 * i + 1)
        hidden, residual = h_f + h_b.flip(1), r_f + r_b.flip(1)
    residual = hidden if residual is None else residual + hidden
    x = layer_norm(layer_norm(residual, "v.norm_f"), "v.norm_f")  # norm_f, then norm_f again
    x = x[:, 1:].mean(dim=1)  # ft_avgtok
    x = F.layer_norm(x, (dim,), sd["mlp_head.0.weight"], sd["mlp_head.0.bias"], eps=1e-5)
    return F.linear(x, sd["mlp_head.1.weight"], sd["mlp_head.1.bias"])


@pytest.mark.parametrize("variant,backend", [("recipe", "reference"), ("recipe", "auto"),
                                             ("rmsnorm", "reference"), ("bimamba_none", "reference")])
def test_converted_ssamba_computes_the_official_forward(variant, backend, tmp_path, one_thread):
    official = tiny_official_ssamba()
    if variant == "rmsnorm":
        official = OrderedDict((k, v) for k, v in official.items()
                               if not re.search(r"(layers\.\d+\.norm|norm_f)\.bias$", k))
    if variant == "bimamba_none":
        official = OrderedDict((k, v) for k, v in official.items()
                               if not re.search(r"mixer\.(A_b_log|D_b|\w+_b\.\w+)$", k))
    path = tmp_path / "tiny.pth"
    torch.save(official, path)
    converted = convert_official(path, scan_backend=backend)
    assert (converted.info.input_tdim, converted.info.patch_stride) == (128, (10, 10))
    assert (converted.info.norm, converted.info.bimamba) == {
        "recipe": ("layernorm", "v2"), "rmsnorm": ("rmsnorm", "v2"), "bimamba_none": ("layernorm", "none")}[variant]
    model = converted.model.eval()
    spec = torch.randn(3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(spec)
        theirs = official_ssamba_logits(official, spec)
    assert ours.shape == (3, 5)
    assert theirs.abs().max() > 0.1  # not a degenerate comparison
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("quirk", ["use_layer_pairing", "use_double_final_norm", "use_direction_average"])
def test_each_quirk_is_needed_for_the_official_forward(quirk, one_thread):
    official = tiny_official_ssamba(depth=2, rows=17)  # 1 + 8x2 patches: 32 frames at stride 16
    spec = torch.randn(2, 32, 128, generator=torch.Generator().manual_seed(2))
    theirs = official_ssamba_logits(official, spec, stride=(16, 16))
    with torch.no_grad():
        same = convert_official(official, patch_stride=(16, 16), scan_backend="reference").model.eval()(spec)
        converted = convert_official(official, patch_stride=(16, 16), scan_backend="reference", **{quirk: False})
        other = converted.model.eval()(spec)
    torch.testing.assert_close(same, theirs, atol=1e-5, rtol=1e-5)
    assert (other - theirs).abs().max() > 1e-3
    assert any(quirk in note for note in converted.info.notes)
    with pytest.raises(TypeError, match="weights fix them"):
        convert_official(official, patch_stride=(16, 16), embed_dim=64)


def tiny_official_ssast_frame(dim=64, depth=2, rows=129, num_classes=4, seed=0) -> OrderedDict:
    gen = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    sd["module.v.cls_token"] = torch.randn(1, 1, dim, generator=gen)
    sd["module.v.pos_embed"] = torch.randn(1, rows, dim, generator=gen) * 0.5
    sd["module.v.dist_token"] = torch.randn(1, 1, dim, generator=gen)
    sd["module.v.patch_embed.proj.weight"] = torch.randn(dim, 1, 128, 2, generator=gen) / 16
    sd["module.v.patch_embed.proj.bias"] = torch.randn(dim, generator=gen) * 0.1
    shapes = {"norm1": [dim], "attn.qkv": [3 * dim, dim], "attn.proj": [dim, dim], "norm2": [dim],
              "mlp.fc1": [4 * dim, dim], "mlp.fc2": [dim, 4 * dim]}
    for i in range(depth):
        for module, shape in shapes.items():
            scale = shape[-1] ** -0.5 if len(shape) == 2 else 0.1
            weight = torch.randn(*shape, generator=gen) * scale + (1.0 if len(shape) == 1 else 0.0)
            sd[f"module.v.blocks.{i}.{module}.weight"] = weight
            sd[f"module.v.blocks.{i}.{module}.bias"] = torch.randn(shape[0], generator=gen) * 0.1
    def rnd(*shape):
        return torch.randn(*shape, generator=gen)

    sd["module.v.norm.weight"], sd["module.v.norm.bias"] = 1 + 0.1 * rnd(dim), 0.1 * rnd(dim)
    sd["module.v.head.weight"], sd["module.v.head.bias"] = rnd(1000, dim), rnd(1000)
    sd["module.v.head_dist.weight"], sd["module.v.head_dist.bias"] = rnd(1000, dim), rnd(1000)
    sd["module.mlp_head.0.weight"], sd["module.mlp_head.0.bias"] = 1 + 0.1 * rnd(dim), 0.1 * rnd(dim)
    sd["module.mlp_head.1.weight"] = torch.randn(num_classes, dim, generator=gen) * dim ** -0.5
    sd["module.mlp_head.1.bias"] = torch.randn(num_classes, generator=gen)
    return sd


def official_ssast_logits(sd: dict, spec: torch.Tensor, heads: int, stride=(128, 1)) -> torch.Tensor:
    """ASTModel.finetuningavgtok over timm 0.4.5 DeiT blocks (eval), from the README."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    dim, batch = sd["v.cls_token"].shape[-1], spec.shape[0]
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("v.blocks."))
    x = F.conv2d(spec.unsqueeze(1).transpose(2, 3), sd["v.patch_embed.proj.weight"],
                 sd["v.patch_embed.proj.bias"], stride=stride).flatten(2).transpose(1, 2)
    x = torch.cat([sd["v.cls_token"].expand(batch, -1, -1), sd["v.dist_token"].expand(batch, -1, -1), x], 1)
    x = x + sd["v.pos_embed"]

    def ln(h, name, eps=1e-6):
        return F.layer_norm(h, (dim,), sd[name + ".weight"], sd[name + ".bias"], eps=eps)

    for i in range(depth):
        p = f"v.blocks.{i}."
        length = x.shape[1]
        qkv = F.linear(ln(x, p + "norm1"), sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(batch, length, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (dim // heads) ** -0.5).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(batch, length, dim)
        x = x + F.linear(out, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        hidden = F.gelu(F.linear(ln(x, p + "norm2"), sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        x = x + F.linear(hidden, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    x = ln(x, "v.norm")[:, 2:].mean(dim=1)  # ft_avgtok: tokens after cls and dist
    return F.linear(ln(x, "mlp_head.0", eps=1e-5), sd["mlp_head.1.weight"], sd["mlp_head.1.bias"])


def test_converted_ssast_computes_the_official_forward(one_thread):
    official = tiny_official_ssast_frame()
    converted = convert_official(official, num_heads=2)
    info = converted.info
    assert (info.patch_stride, info.input_tdim, info.num_heads, info.size) == ((128, 1), 128, 2, "custom")
    spec = torch.randn(2, 128, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = converted.model.eval()(spec)
    torch.testing.assert_close(ours, official_ssast_logits(official, spec, heads=2), atol=1e-5, rtol=1e-5)
    with pytest.raises(OfficialCheckpointError, match="num_heads"):
        convert_official(tiny_official_ssast_frame(dim=48))


def test_state_dict_without_prefix_and_rmsnorm_and_bimamba_none_variants():
    plain = tiny_official_ssamba(prefix="")
    assert convert_official(plain).info.norm == "layernorm"

    rms = OrderedDict((k, v) for k, v in plain.items() if not re.search(r"(layers\.\d+\.norm|norm_f)\.bias$", k))
    converted = convert_official(rms)
    assert converted.info.norm == "rmsnorm" and converted.model.config.norm == "rmsnorm"
    assert torch.equal(converted.model.norm_f.weight, rms["v.norm_f.weight"])
    assert converted.model.norm_f.weight.data_ptr() != rms["v.norm_f.weight"].data_ptr()  # a copy

    half = OrderedDict((k, v.half()) for k, v in plain.items())
    converted = convert_official(half)
    assert converted.model.pos_embed.dtype == torch.float32
    assert torch.equal(converted.model.pos_embed, half["v.pos_embed"].float())
    assert "float16 tensors converted to float32" in converted.info.notes

    none = OrderedDict((k, v) for k, v in plain.items() if not re.search(r"mixer\.(A_b_log|D_b|\w+_b\.\w+)$", k))
    converted = convert_official(none)
    assert converted.info.bimamba == "none" and not converted.model.config.use_bidirectional_mixer

    v1 = OrderedDict((k, v) for k, v in plain.items() if not re.search(r"mixer\.(D_b|\w+_b\.\w+)$", k))
    with pytest.raises(OfficialCheckpointError, match="v1"):
        convert_official(v1)


def test_geometry_inference_and_overrides():
    # 96 patch rows: 8x12 at stride 16 (192-207 frames) or 12x8 at stride 10 (86-95): no recipe length
    ambiguous = tiny_official_ssamba(depth=2, rows=97)
    with pytest.raises(OfficialCheckpointError, match="input_tdim and/or patch_stride"):
        convert_official(ambiguous)
    info = convert_official(ambiguous, input_tdim=90).info
    assert (info.patch_stride, info.input_tdim, info.geometry.startswith("given")) == ((10, 10), 90, True)
    info = convert_official(ambiguous, patch_stride=(16, 16)).info
    assert (info.patch_stride, info.input_tdim) == ((16, 16), 192)
    with pytest.raises(OfficialCheckpointError, match="does not give"):
        convert_official(ambiguous, input_tdim=128)
    # the recipe lengths are recognised
    for rows, tdim, stride in ((601, 512, (10, 10)), (1213, 1024, (10, 10)), (513, 1024, (16, 16))):
        info = convert_official(tiny_official_ssamba(depth=2, rows=rows)).info
        assert (info.input_tdim, info.patch_stride) == (tdim, stride), rows
    assert convert_official(tiny_official_ssamba(depth=2, rows=601)).info.dataset == "esc50"


# -- errors ----------------------------------------------------------------------------
class NotATensor:  # pickled by reference: loading it needs arbitrary unpickling
    def __init__(self):
        self.value = 3


def test_truncated_file(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(tiny_official_ssamba(depth=2), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(OfficialCheckpointError, match="truncated or corrupt"):
        convert_official(path)
    path.write_bytes(b"")
    with pytest.raises(OfficialCheckpointError, match="truncated or corrupt"):
        ssamba.load_model(path)
    with pytest.raises(FileNotFoundError):
        convert_official(tmp_path / "missing.pth")


def test_file_needing_arbitrary_unpickling_is_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    state = tiny_official_ssamba(depth=2)
    state["module.meta"] = NotATensor()
    torch.save(state, path)
    with pytest.raises(OfficialCheckpointError, match=r"refusing to load .*NotATensor.*arbitrary code"):
        convert_official(path)


def test_file_of_another_model(tmp_path):
    resnet = OrderedDict()
    resnet["conv1.weight"] = torch.randn(64, 3, 7, 7)
    for name in ("weight", "bias", "running_mean", "running_var"):
        resnet[f"bn1.{name}"] = torch.randn(64)
    resnet["bn1.num_batches_tracked"] = torch.tensor(0)
    resnet["layer1.0.conv1.weight"] = torch.randn(64, 64, 3, 3)
    resnet["fc.weight"], resnet["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet, path)
    with pytest.raises(OfficialCheckpointError, match="not an official SSAMBA or SSAST checkpoint.*conv1.weight"):
        convert_official(path)
    torch.save(ssamba.create_model("ssamba_test").state_dict(), path)
    with pytest.raises(OfficialCheckpointError, match="looks like an ssamba state dict"):
        convert_official(path)


def test_extra_and_missing_keys_are_named(tmp_path):
    path = tmp_path / "tiny.pth"
    extra = tiny_official_ssamba(depth=2)
    extra["module.v.layers.1.mixer.gamma"] = torch.ones(32)
    torch.save(extra, path)
    with pytest.raises(OfficialCheckpointError, match=r"unexpected key\(s\): v\.layers\.1\.mixer\.gamma"):
        convert_official(path)

    missing = tiny_official_ssamba(depth=2)
    del missing["module.v.layers.1.mixer.x_proj_b.weight"]
    del missing["module.mlp_head.1.bias"]
    torch.save(missing, path)
    with pytest.raises(OfficialCheckpointError,
                       match=r"missing key\(s\): mlp_head\.1\.bias, v\.layers\.1\.mixer\.x_proj_b\.weight"):
        convert_official(path)

    official = synth_checkpoint(load_layout("ssast_tiny_pretrain_patch"))
    del official["module.gpredlayer.2.weight"]
    with pytest.raises(OfficialCheckpointError, match=r"missing key\(s\): gpredlayer\.2\.weight"):
        convert_official(official)


def test_bad_shapes_are_named():
    state = tiny_official_ssamba(depth=2)
    state["module.v.layers.1.mixer.dt_proj_b.weight"] = torch.randn(64, 3)
    with pytest.raises(OfficialCheckpointError, match=r"v\.layers\.1\.mixer\.dt_proj_b\.weight has shape \[64, 3\]"):
        convert_official(state)


# -- command line ------------------------------------------------------------------------
def run_convert(argv: list[str]) -> int:
    from ssamba.cli import main

    return main(["convert", *argv])


def test_convert_command(tmp_path, capsys):
    official = tiny_official_ssamba(depth=2, rows=97)  # needs a geometry hint
    path = tmp_path / "tiny.pth"
    torch.save(official, path)
    out = tmp_path / "converted"
    assert run_convert([str(path), str(out)]) == 2
    assert "--input-tdim N, --patch-stride F T" in capsys.readouterr().err
    assert run_convert([str(path), str(out), "--patch-stride", "10", "10", "--dataset", "esc50"]) == 0
    printed = capsys.readouterr().out
    assert "official SSAMBA custom (fine-tuned, 5 classes)" in printed and "stride 10x10" in printed
    model = ssamba.load_model(out)
    assert (model.config.patch_stride, model.config.input_tdim, model.config.num_classes) == ((10, 10), 86, 5)
    assert model.frontend_config.mean == pytest.approx(-6.6268077)
    assert run_convert([str(path), str(out), "--input-tdim", "90"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert run_convert([str(path), str(out), "--input-tdim", "90", "--overwrite"]) == 0
    assert ssamba.load_model(out).config.input_tdim == 90
    path.write_bytes(path.read_bytes()[:100])
    assert run_convert([str(path), str(tmp_path / "other")]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
