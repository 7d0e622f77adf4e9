"""The HEAR validator's checks, replicated without installing it."""

import pytest
import torch

import ssamba
from ssamba import hear


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    ssamba.save_model(ssamba.create_model("ssamba_test", input_tdim=128), path)
    return hear.load_model(str(path))


def test_attributes(model):
    assert isinstance(model.sample_rate, int) and model.sample_rate == 16000
    assert isinstance(model.scene_embedding_size, int) and model.scene_embedding_size == 32
    assert isinstance(model.timestamp_embedding_size, int) and model.timestamp_embedding_size == 32


@pytest.mark.parametrize("seconds", [1.07, 1.98, 4.0])
def test_timestamp_embeddings(model, seconds):
    g = torch.Generator().manual_seed(1)
    audio = torch.rand(3, int(seconds * 16000), generator=g) * 2 - 1
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    assert embeddings.dtype == torch.float32 and timestamps.dtype == torch.float32
    assert embeddings.dim() == 3 and embeddings.shape[0] == 3 and embeddings.shape[2] == model.timestamp_embedding_size
    assert timestamps.shape == embeddings.shape[:2]
    hops = torch.diff(timestamps, dim=1)
    assert torch.all((hops - hops[0, 0]).abs() < 1.0)  # uniform spacing, within 1 ms
    hop = hops[0, 0].item()
    assert hop <= 50.0
    assert torch.all(timestamps[:, 0] >= 0)
    assert (seconds * 1000 - timestamps[:, -1]).abs().max() <= 2 * hop  # the last one near the end
    assert torch.isfinite(embeddings).all()


def test_scene_embeddings(model):
    g = torch.Generator().manual_seed(2)
    audio = torch.rand(4, int(2.74 * 16000), generator=g) * 2 - 1
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (4, model.scene_embedding_size) and scene.dtype == torch.float32
    alone = hear.get_scene_embeddings(audio[2:3], model)
    assert torch.allclose(scene[2], alone[0], atol=1e-5)  # batching does not change a clip
    assert not torch.allclose(scene[0], scene[1])


def test_long_audio_crosses_window_borders_on_one_grid(model):
    audio = torch.sin(torch.arange(16000 * 5) / 16000 * 2 * 3.14159 * 440).unsqueeze(0) * 0.3
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)  # 5 s > 1.28 s windows
    assert torch.allclose(torch.diff(timestamps), torch.full_like(torch.diff(timestamps), model.hop_ms))


def test_bad_audio_shape(model):
    with pytest.raises(ValueError, match="n_sounds"):
        hear.get_scene_embeddings(torch.zeros(16000), model)


def test_empty_path_warns_and_gives_random_tiny():
    with pytest.warns(UserWarning, match="random weights"):
        model = hear.load_model("")
    assert model.scene_embedding_size == 192


def test_the_x_ares_encoder_passes_the_benchmarks_encoder_check(monkeypatch):
    # what X-ARES's check_audio_encoder asks, without installing xares: an nn.Module whose
    # class name ends with "Encoder", output_dim and sampling_rate, and (B, S) -> (B, T, output_dim)
    from ssamba.xares import SSAMBAEncoder

    monkeypatch.setenv("SSAMBA_XARES_MODEL", "ssamba_test")
    encoder = SSAMBAEncoder()
    assert type(encoder).__name__.endswith("Encoder") and isinstance(encoder, torch.nn.Module)
    assert encoder.sampling_rate == 16000 and encoder.output_dim == encoder.embedder.embedding_size
    audio = torch.randn(2, 50000)
    out = encoder(audio)
    assert out.dim() == 3 and out.shape[0] == 2 and out.shape[2] == encoder.output_dim
    assert out.shape[1] == encoder.embedder.columns_for(50000)  # one frame per hop over the clip
    assert torch.allclose(out[1], encoder(audio[1:])[0], atol=1e-5)  # a clip's frames do not depend on its batch
    monkeypatch.delenv("SSAMBA_XARES_MODEL")
    assert SSAMBAEncoder().output_dim == ssamba.load_model("ssast-demo").config.embed_dim  # the shipped default
