"""Linear probes: how much of a task a frozen representation carries.

The HEAR-style protocol: pool each clip's tokens into one vector per layer, then fit a
multinomial logistic regression on the training clips of a task (standardised features,
full batch, a small L2 penalty), choose the layer by validation accuracy and report the
test accuracy at that layer. Everything is deterministic for a given input.

    layers = layer_embeddings(encoder, spec)   # (num_layers, N, D)
    result = probe_layers(layers[:, tr], y[tr], layers[:, va], y[va], layers[:, te], y[te], classes)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def layer_embeddings(encoder: torch.nn.Module, spec: Tensor, batch_size: int = 128) -> Tensor:
    """``(N, T, F)`` spectrograms -> ``(S, N, D)``: the mean of the patch tokens (class tokens
    left out) of each of the encoder's ``S`` hidden states (see ``forward_hidden_states``)."""
    was_training = encoder.training
    encoder.eval()
    skip = encoder.num_prefix_tokens
    chunks = []
    for start in range(0, len(spec), batch_size):
        states = encoder.forward_hidden_states(spec[start:start + batch_size])
        chunks.append(torch.stack([s[:, skip:].float().mean(1) for s in states]))  # (S, b, D)
    encoder.train(was_training)
    return torch.cat(chunks, dim=1)


def pooled_logmel(spec: Tensor, pool: tuple[int, int] = (4, 4)) -> Tensor:
    """The no-network baseline: ``(N, T, F)`` log-mel average-pooled over ``pool`` (time, freq) cells."""
    return F.avg_pool2d(spec.unsqueeze(1), pool).flatten(1)


def linear_probe(train_x: Tensor, train_y: Tensor, eval_sets: list[tuple[Tensor, Tensor]], classes: int,
                 steps: int = 300, lr: float = 1e-2, l2: float = 1e-3) -> Tensor:
    """Fit softmax regressions on ``(train_x, train_y)``; accuracy on each ``(x, y)`` of
    ``eval_sets``, as a ``(len(eval_sets), S)`` tensor.

    ``train_x`` is ``(N, D)`` or ``(S, N, D)``: ``S`` independent problems (one per layer)
    fitted at once - Adam is elementwise, so summing their losses changes none of them.
    Features are standardised with the training statistics.
    """
    if train_x.shape[-2] == 0:
        raise ValueError("a linear probe needs at least one training clip")
    single = train_x.dim() == 2
    if single:
        train_x, eval_sets = train_x.unsqueeze(0), [(x.unsqueeze(0), y) for x, y in eval_sets]
    mean, std = train_x.mean(1, keepdim=True), train_x.std(1, unbiased=False, keepdim=True) + 1e-5
    x = (train_x - mean) / std  # (S, N, D)
    problems = x.shape[0]
    generator = torch.Generator().manual_seed(0)
    weight = torch.zeros(problems, x.shape[2], classes)
    weight.normal_(0.0, 1e-3, generator=generator)
    weight.requires_grad_(True)
    bias = torch.zeros(problems, 1, classes, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=lr)
    target = train_y.repeat(problems)
    for _ in range(steps):
        optimizer.zero_grad()
        logits = torch.baddbmm(bias, x, weight)  # (S, N, C)
        loss = F.cross_entropy(logits.flatten(0, 1), target, reduction="sum") / len(train_y)
        (loss + l2 * weight.pow(2).sum()).backward()
        optimizer.step()
    with torch.no_grad():
        return torch.stack([(torch.baddbmm(bias, (ex - mean) / std, weight).argmax(2) == ey).float().mean(1)
                            for ex, ey in eval_sets])


@dataclass
class ProbeResult:
    """Test accuracy at the layer with the best validation accuracy, and every layer's."""

    test: float
    layer: int
    valid_by_layer: list[float]
    test_by_layer: list[float]


def probe_layers(train: Tensor, train_y: Tensor, valid: Tensor, valid_y: Tensor, test: Tensor, test_y: Tensor,
                 classes: int, **options) -> ProbeResult:
    """Probe every layer of ``(S, N, D)`` embeddings; the layer is chosen on validation."""
    valid_acc, test_acc = linear_probe(train, train_y, [(valid, valid_y), (test, test_y)], classes,
                                       **options).tolist()
    best = max(range(len(valid_acc)), key=lambda i: (valid_acc[i], i))  # ties: the deeper layer
    return ProbeResult(test=test_acc[best], layer=best, valid_by_layer=valid_acc, test_by_layer=test_acc)
