"""``ssamba explain``: the maps reproduce every mixer of a layer-paired SSAMBA exactly,
SSAST's are its attention, sizes are bounded, and the command writes its files."""

import json

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F

import ssamba
from ssamba.cli import main
from ssamba.interfaces.explain import attention_to_patches, explain
from ssamba.ops.hidden_attention import apply_hidden_attention

from ..conftest import save_test_model, speech_like


@pytest.mark.parametrize("pairing", [True, False])
def test_maps_rebuild_each_mixer_output_before_out_proj(pairing, gen):
    # For every layer (the odd ones mirrored under pairing): sum over directions of
    # (alpha u + D u) * SiLU(z), through out_proj, is the mixer's output; so the
    # maps explain() returns are the scans the model ran, direction by direction.
    torch.manual_seed(0)
    model = ssamba.create_model("ssamba_test", use_layer_pairing=pairing).double().eval()
    spec = torch.randn(64, 128, generator=gen, dtype=torch.float64)
    seen = {}
    hooks = [layer.mixer.register_forward_hook(
        lambda module, args, kwargs, out, i=i: seen.__setitem__(i, (args[0], kwargs.get("mirrored", False), out)),
        with_kwargs=True) for i, layer in enumerate(model.layers)]
    d_inner = model.layers[0].mixer.out_proj.weight.shape[1]
    ex = explain(model, spec, channels=range(d_inner), absolute=False)
    for h in hooks:
        h.remove()
    assert ex.directions == ["causal", "anticausal"] and ex.layers == [0, 1, 2, 3]
    for i, layer in enumerate(model.layers):
        hidden, mirrored, out = seen[i]
        assert mirrored == (pairing and i % 2 == 1)
        y = 0
        for _, reverse, (u, _, _, _, _, D, z, _) in layer.mixer.scan_operands(hidden, mirrored):
            alpha = ex.channel_maps[f"layer{i}/{'anticausal' if reverse else 'causal'}"].unsqueeze(0)
            y = y + apply_hidden_attention(alpha, u, D) * F.silu(z)
        rebuilt = (y.transpose(1, 2) @ layer.mixer.out_proj.weight.t()) * 0.5  # the directions' average
        assert ((rebuilt - out).abs().max() / out.abs().max()).item() < 1e-5
        causal = ex.maps[f"layer{i}/causal"]
        assert torch.count_nonzero(causal.triu(1)) == 0 and torch.count_nonzero(ex.maps[f"layer{i}/anticausal"].tril(-1)) == 0
        assert torch.allclose(causal, ex.channel_maps[f"layer{i}/causal"].mean(0))


def test_ssast_maps_are_its_softmax_attention(gen):
    torch.manual_seed(0)
    model = ssamba.create_model("ssast_test_patch", attention="explicit").eval()
    spec = torch.randn(64, 128, generator=gen)
    ex = explain(model, spec, layers=[-1], channels=[1])
    assert ex.layers == [1] and ex.directions == ["attention"]
    m = ex.maps["layer1/attention"]
    assert m.shape == (34, 34) and torch.allclose(m.sum(-1), torch.ones(34), atol=1e-5)
    # recompute the last block's attention from its input by hand
    with torch.no_grad():
        x = model.embed(spec[None])
        x = model.blocks[0](x)
        q, k, _ = model.blocks[1].attn.qkv(model.blocks[1].norm1(x)).reshape(1, 34, 3, 2, 16).permute(2, 0, 3, 1, 4)
        weights = ((q @ k.transpose(-2, -1)) / 4).softmax(-1)[0]
    assert torch.allclose(ex.channel_maps["layer1/attention"][0], weights[1], atol=1e-6)
    assert torch.allclose(m, weights.mean(0), atol=1e-6)
    column = attention_to_patches(ex, 1, 2)
    assert column.shape == ex.grid == (8, 4)


def test_limits_and_families_are_checked(gen):
    torch.manual_seed(0)
    spec = torch.randn(64, 128, generator=gen)
    with pytest.raises(ValueError, match="33 tokens.*stops at 32"):
        explain(ssamba.create_model("ssamba_test"), spec, max_tokens=32)
    with pytest.raises(ValueError, match="MambaOut has no SSM"):
        explain(ssamba.create_model("mambaout_test"), spec)
    with pytest.raises(ValueError, match="layers must be"):
        explain(ssamba.create_model("ssamba_test"), spec, layers=[4])
    with pytest.raises(ValueError, match="channels must be"):
        explain(ssamba.create_model("ssamba_test"), spec, channels=[64])


def test_command_writes_maps_json_and_figures_beside_ssast(tmp_path, gen, capsys):
    model = save_test_model(tmp_path / "m")
    torch.manual_seed(0)
    ssamba.save_model(ssamba.create_model("ssast_test_frame"), tmp_path / "ssast")  # another time stride
    soundfile.write(tmp_path / "a.wav", speech_like(16000, gen).numpy(), 16000)
    out = tmp_path / "x"
    assert main(["explain", str(tmp_path / "a.wav"), "--checkpoint", str(model), "--out", str(out),
                 "--compare", str(tmp_path / "ssast"), "--layers", "0,-1", "--channels", "1", "--at", "0.3",
                 "--no-progress"]) == 0
    summary = json.loads((out / "explain.json").read_text())
    assert [m["family"] for m in summary["models"].values()] == ["ssamba", "ssast"]
    assert summary["models"]["model0"]["layers"] == [0, 3] and summary["query_times_s"] == [0.3]
    # 0.3 s is column 1 of the 16-frame patches (centres 80 + 160 k ms) and column 14 of
    # the 2-frame ones (centres 20 + 20 k ms)
    assert summary["models"]["model0"]["query_columns"] == [1] and summary["models"]["model1"]["query_columns"] == [14]
    maps = np.load(out / "maps.npz")
    assert maps["model0/layer3/anticausal"].shape == (33, 33) and maps["model0/layer0/causal/channels"].shape == (1, 33, 33)
    assert maps["model1/layer1/attention"].shape == (34, 34)
    for figure in ("token_maps.png", "spectrogram_attention.png"):
        assert (out / figure).stat().st_size > 10_000
    assert "wrote maps.npz" in capsys.readouterr().out
    # a user error is one line: too long an input for the size limit
    assert main(["explain", str(tmp_path / "a.wav"), "--checkpoint", str(model), "--out", str(out),
                 "--frames", "640", "--max-tokens", "100"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_causal_mixer_under_pairing_scans_forward_in_even_layers_and_backward_in_odd(gen, tmp_path):
    from ssamba.interfaces.explain import draw_token_maps

    torch.manual_seed(0)
    model = ssamba.create_model("ssamba_test", use_bidirectional_mixer=False)
    ex = explain(model, torch.randn(64, 128, generator=gen))
    assert sorted(ex.maps) == ["layer0/causal", "layer1/anticausal", "layer2/causal", "layer3/anticausal"]
    assert ex.directions == ["causal", "anticausal"]
    assert torch.equal(ex.layer_map(1), ex.maps["layer1/anticausal"])
    draw_token_maps([("m", ex)], tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 5_000


def test_a_file_longer_than_the_explained_stretch_is_said(tmp_path, gen, caplog):
    import logging

    model = save_test_model(tmp_path / "m")  # 64 frames: 0.64 s
    soundfile.write(tmp_path / "long.wav", speech_like(16000 * 2, gen).numpy(), 16000)
    caplog.set_level(logging.WARNING)
    assert main(["explain", str(tmp_path / "long.wav"), "--checkpoint", str(model), "--out", str(tmp_path / "x"),
                 "--no-progress"]) == 0
    assert "explaining 0.64 s of its 2.00 s from 0 s" in caplog.text
