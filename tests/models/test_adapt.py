import torch

import ssamba
from ssamba.layers import resample_pos_embed
from ssamba.models.adapt import load_encoder_weights


def test_pretrained_weights_reach_a_finetuning_geometry():
    torch.manual_seed(0)
    source = ssamba.create_model("ssamba_test")  # stride 16: 8 x 4 grid
    target = ssamba.create_model("ssamba_test", patch_stride=(10, 10), num_classes=5)  # 12 x 5 grid
    report = load_encoder_weights(target, source)
    assert report.missing == ["head.fc.bias", "head.fc.weight", "head.norm.bias", "head.norm.weight"]
    assert report.unexpected == [] and report.mismatched == []
    assert report.resampled == ["pos_embed (8, 4) -> (12, 5)"]
    src, dst = source.state_dict(), target.state_dict()
    for name in src:
        if name != "pos_embed":
            assert torch.equal(src[name], dst[name]), name  # incl. the conv kernel at a new stride
    assert torch.equal(dst["pos_embed"][:, :1], src["pos_embed"][:, :1])  # cls row kept
    expected = resample_pos_embed(src["pos_embed"][:, 1:], (8, 4), (12, 5))
    assert torch.equal(dst["pos_embed"][:, 1:], expected)


def test_family_mismatch_is_refused():
    import pytest

    with pytest.raises(TypeError, match="cannot load"):
        load_encoder_weights(ssamba.create_model("ssamba_test"), ssamba.create_model("ssast_test_patch"))
