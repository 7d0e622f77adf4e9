"""Linear probes: how much of a task a frozen representation carries.

The HEAR-style protocol: pool each clip's tokens into one vector per layer, then fit a
multinomial logistic regression (scikit-learn's, as HEAR-style evaluations use) on the
training clips of a task (standardised features, L2 penalty), choose the layer by
validation accuracy and report the test accuracy at that layer. Everything is
deterministic for a given input.

    layers = layer_embeddings(encoder, spec)   # (num_layers, N, D)
    result = probe_layers(layers[:, tr], y[tr], layers[:, va], y[va], layers[:, te], y[te], classes)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
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
                 c: float = 1.0, max_iter: int = 1000, tol: float = 1e-4,
                 dtype: torch.dtype = torch.float64) -> Tensor:
    """Fit a multinomial logistic regression (scikit-learn's ``LogisticRegression``, L-BFGS,
    inverse L2 strength ``c``, stopping at ``max_iter`` iterations or tolerance ``tol``, in
    ``dtype``) on ``(train_x, train_y)``; accuracy on each ``(x, y)`` of ``eval_sets``, as
    a ``(len(eval_sets), S)`` tensor.

    ``train_x`` is ``(N, D)`` or ``(S, N, D)``: ``S`` independent problems, one per layer.
    Features are standardised with the training statistics. ``classes`` is the size of
    the label space; classes absent from the training clips are never predicted.
    """
    if train_x.shape[-2] == 0:
        raise ValueError("a linear probe needs at least one training clip")
    if int(train_y.max()) >= classes or int(train_y.min()) < 0:
        raise ValueError(f"training labels must lie in [0, {classes}), got {int(train_y.min())}..{int(train_y.max())}")
    from ..errors import require

    LogisticRegression = require("sklearn.linear_model", "the linear probe").LogisticRegression
    ConvergenceWarning = require("sklearn.exceptions", "the linear probe").ConvergenceWarning
    single = train_x.dim() == 2
    if single:
        train_x, eval_sets = train_x.unsqueeze(0), [(x.unsqueeze(0), y) for x, y in eval_sets]
    y = train_y.numpy()
    accuracy = torch.zeros(len(eval_sets), train_x.shape[0])
    for layer, x in enumerate(train_x.to(dtype)):
        mean, std = x.mean(0), x.std(0, unbiased=False) + 1e-5
        if len(np.unique(y)) == 1:  # one class seen: it is the only possible prediction
            for k, (_, ey) in enumerate(eval_sets):
                accuracy[k, layer] = (ey == int(y[0])).double().mean()
            continue
        model = LogisticRegression(C=c, max_iter=max_iter, tol=tol)
        with warnings.catch_warnings():
            # max_iter is the budget; an L-BFGS stopped there is still a fitted classifier
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(((x - mean) / std).numpy(), y)
        for k, (ex, ey) in enumerate(eval_sets):
            predicted = model.predict(((ex[layer].to(dtype) - mean) / std).numpy())
            accuracy[k, layer] = float((predicted == ey.numpy()).mean())
    return accuracy


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
