import pytest
import torch

import ssamba
from ssamba.training.probe import layer_embeddings, linear_probe, pooled_logmel, probe_layers


def _blobs(gen, n=240, dim=16, classes=4, spread=0.3):
    centres = torch.randn(classes, dim, generator=gen) * 3
    y = torch.arange(n) % classes
    return centres[y] + spread * torch.randn(n, dim, generator=gen), y


def test_probe_separates_separable_classes_and_not_random_labels(gen):
    x, y = _blobs(gen)
    (train_acc, test_acc), = linear_probe(x[:160], y[:160], [(x[:160], y[:160]), (x[160:], y[160:])], 4).T
    assert train_acc == 1.0 and test_acc > 0.95
    shuffled = y[torch.randperm(len(y), generator=gen)]
    (_, test_acc), = linear_probe(x[:160], shuffled[:160], [(x[:160], shuffled[:160]), (x[160:], shuffled[160:])],
                                  4).T
    assert test_acc < 0.5  # chance 0.25: no signal to find


def test_layers_fitted_together_equal_layers_fitted_alone(gen):
    layers = torch.stack([_blobs(gen, spread=s)[0] for s in (0.3, 3.0, 10.0)])  # (3, N, D)
    y = torch.arange(240) % 4
    together = linear_probe(layers[:, :160], y[:160], [(layers[:, 160:], y[160:])], 4)[0]
    alone = torch.stack([linear_probe(layers[k, :160], y[:160], [(layers[k, 160:], y[160:])], 4)[0, 0]
                         for k in range(3)])
    assert torch.allclose(together, alone, atol=1e-6)
    assert together[0] > together[2]  # the noisier layer probes worse


def test_probe_layers_picks_the_layer_by_validation(gen):
    clean, y = _blobs(gen, spread=0.3)
    noise = torch.randn(2, 240, 16, generator=gen)
    layers = torch.stack([noise[0], clean, noise[1]])
    result = probe_layers(layers[:, :120], y[:120], layers[:, 120:180], y[120:180], layers[:, 180:], y[180:], 4)
    assert result.layer == 1 and result.test == result.test_by_layer[1] > 0.9
    assert len(result.valid_by_layer) == 3
    with pytest.raises(ValueError, match="at least one"):
        linear_probe(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), [], 2)


@pytest.mark.parametrize("preset", ["ssamba_test", "ssast_test_patch"])
def test_layer_embeddings_pool_every_hidden_state(preset, gen):
    encoder = ssamba.create_model(preset)
    spec = torch.randn(5, 64, 128, generator=gen)
    layers = layer_embeddings(encoder, spec, batch_size=2)
    states = encoder.eval().forward_hidden_states(spec)
    assert layers.shape == (len(states), 5, encoder.config.embed_dim)
    assert torch.allclose(layers[-1], states[-1][:, encoder.num_prefix_tokens:].mean(1), atol=1e-5)
    assert pooled_logmel(spec).shape == (5, 16 * 32)


def test_probe_rejects_labels_outside_the_classes_and_handles_one_class(gen):
    x, y = _blobs(gen)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        linear_probe(x, y, [], 3)
    ones = torch.ones(len(y), dtype=torch.long)
    (acc,), = linear_probe(x[:160], ones[:160], [(x[160:], y[160:])], 4)
    assert acc == pytest.approx(float((y[160:] == 1).float().mean()))
