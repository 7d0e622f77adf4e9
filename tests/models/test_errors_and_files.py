import json

import pytest
import torch

import ssamba


def test_unknown_option_lists_valid_ones():
    with pytest.raises(TypeError, match="valid options.*embed_dim"):
        ssamba.create_model("ssamba_test", embded_dim=64)


def test_unknown_preset_lists_available():
    with pytest.raises(ValueError, match="ssamba_tiny"):
        ssamba.create_model("ssamba_huge")


def test_bad_option_values():
    with pytest.raises(ValueError, match="even depth"):
        ssamba.create_model("ssamba_test", depth=3)
    with pytest.raises(ValueError, match="norm"):
        ssamba.create_model("ssamba_test", norm="batchnorm")
    with pytest.raises(ValueError, match="attention"):
        ssamba.create_model("ssast_test_patch", attention="flash")
    with pytest.raises(ValueError, match="pooling"):
        ssamba.create_model("ssast_test_patch", num_classes=2, pooling="max")


def test_bad_inputs_are_explained(gen):
    model = ssamba.create_model("ssamba_test")
    with pytest.raises(ValueError, match="mel bins"):
        model.forward_features(torch.randn(1, 64, 80))
    with pytest.raises(ValueError, match="mel bins"):
        model.forward_features(torch.randn(64, 128))
    with pytest.raises(ValueError, match="smaller than one"):
        model.forward_features(torch.randn(1, 8, 128))
    with pytest.raises(ValueError, match="mask"):
        model.forward_features(torch.randn(1, 64, 128), mask=torch.zeros(1, 31, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="num_classes"):
        model(torch.randn(1, 64, 128))


def test_rmsnorm_variant_has_no_norm_biases():
    model = ssamba.create_model("ssamba_test", norm="rmsnorm")
    assert not any(n.endswith("norm.bias") or n == "norm_f.bias" for n, _ in model.named_parameters())
    assert model.forward_features(torch.randn(1, 64, 128)).shape == (1, 33, 32)


@pytest.mark.parametrize("name", ["ssamba_test", "mambaout_test", "ssast_test_frame"])
def test_save_load_round_trip(name, tmp_path, gen):
    torch.manual_seed(0)
    model = ssamba.create_model(name, num_classes=4, patch_stride=(128, 1) if "ssast" in name else (10, 10)).eval()
    ssamba.save_model(model, tmp_path / "m")
    loaded = ssamba.load_model(tmp_path / "m").eval()
    assert loaded.config == model.config and type(loaded) is type(model)
    spec = torch.randn(2, 64, 128, generator=gen)
    with torch.no_grad():
        assert torch.equal(loaded(spec), model(spec))
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["family"] == model.family


def test_load_refuses_unknown_config_keys(tmp_path):
    ssamba.save_model(ssamba.create_model("ssamba_test"), tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["config"]["if_bidirectional"] = "true"
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(TypeError, match="if_bidirectional"):
        ssamba.load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such model folder"):  # a path that is not there
        ssamba.load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not an ssamba model"):  # a folder that holds no model
        ssamba.load_model(tmp_path / "empty")

def test_the_front_end_is_declared_metadata(tmp_path):
    from ssamba.frontend import FrontendConfig
    from ssamba.interfaces.embedder import Embedder

    assert ssamba.create_model("ssamba_test").frontend_config is None
    with pytest.raises(ValueError, match="mel bins"):  # given at construction, checked there
        ssamba.create_model("ssamba_test", frontend=FrontendConfig(num_mel_bins=64))
    frontend = FrontendConfig(target_length=64, mean=-5.0, std=3.0)
    model = ssamba.create_model("ssamba_test", frontend=frontend)
    assert model.frontend_config == frontend
    ssamba.save_model(model, tmp_path / "m")
    loaded = ssamba.load_model(tmp_path / "m")
    assert loaded.frontend_config == frontend
    # a re-strided embedder keeps the model's front end
    assert Embedder(loaded, hop_frames=2).frontend.config == frontend
