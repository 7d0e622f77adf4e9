import itertools
import math

import numpy as np
import pytest
import torch

from ssamba.training.metrics import (
    accuracy,
    classification_metrics,
    d_prime,
    mean_average_precision,
    roc_auc,
)


def brute_auc(scores: list[float], positive: list[bool]) -> float:
    """Share of (positive, negative) pairs ordered correctly; ties count one half."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a, b in itertools.product(pos, neg)]
    return sum(pairs) / len(pairs)


def brute_ap(scores: list[float], positive: list[bool]) -> float:
    """Step-wise AP: at each distinct threshold t (high to low), precision of {s >= t}
    times the gain in recall."""
    total = sum(positive)
    ap, previous_recall = 0.0, 0.0
    for t in sorted(set(scores), reverse=True):
        selected = [p for s, p in zip(scores, positive) if s >= t]
        recall = sum(selected) / total
        ap += (recall - previous_recall) * sum(selected) / len(selected)
        previous_recall = recall
    return ap


def random_problem(seed: int, batch: int = 40, classes: int = 6, ties: bool = False):
    rng = np.random.default_rng(seed)
    targets = (rng.random((batch, classes)) < 0.3).astype(np.float32)
    targets[:, 0] = 0  # a class without positives: left out of mAP and AUC
    targets[:, 1] = 1  # a class without negatives: left out of AUC only
    scores = targets * 0.5 + rng.random((batch, classes))  # informative but imperfect
    if ties:
        scores = np.round(scores * 4) / 4  # many tied scores
    return scores, targets


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_and_auc_match_brute_force_definitions(seed, ties):
    scores, targets = random_problem(seed, ties=ties)
    aps, aucs = [], []
    for c in range(scores.shape[1]):
        s, p = scores[:, c].tolist(), (targets[:, c] > 0).tolist()
        if any(p):
            aps.append(brute_ap(s, p))
        if any(p) and not all(p):
            aucs.append(brute_auc(s, p))
    assert len(aps) == 5 and len(aucs) == 4
    assert math.isclose(mean_average_precision(scores, targets), sum(aps) / len(aps), rel_tol=1e-12)
    assert math.isclose(roc_auc(scores, targets), sum(aucs) / len(aucs), rel_tol=1e-12)
    # torch tensors give the same
    assert math.isclose(roc_auc(torch.from_numpy(scores), torch.from_numpy(targets)), sum(aucs) / len(aucs))


def test_known_values():
    # positives ranked 1st and 3rd: AP = (1 + 2/3) / 2; AUC: 3 of 4 pairs ordered
    scores = torch.tensor([[0.9], [0.8], [0.7], [0.1]])
    targets = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    assert math.isclose(mean_average_precision(scores, targets), (1 + 2 / 3) / 2)
    assert math.isclose(roc_auc(scores, targets), 0.75)
    # all scores tied: AP = prevalence, AUC = 1/2
    flat = torch.zeros(4, 1)
    assert math.isclose(mean_average_precision(flat, targets), 0.5)
    assert math.isclose(roc_auc(flat, targets), 0.5)


def test_perfect_and_random_scores():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 5000)
    onehot = np.eye(10, dtype=np.float32)[labels]
    perfect = onehot + 0.01 * rng.random(onehot.shape)
    m = classification_metrics(perfect, labels, multilabel=False)
    assert m["acc"] == 1.0 and m["mAP"] == 1.0 and m["AUC"] == 1.0 and m["d_prime"] == math.inf

    random = rng.random(onehot.shape)
    m = classification_metrics(random, onehot, multilabel=False)
    assert abs(m["acc"] - 0.1) < 0.02
    assert abs(m["AUC"] - 0.5) < 0.03
    assert abs(m["mAP"] - 0.1) < 0.02  # AP of random scores ~ prevalence
    assert abs(m["d_prime"]) < 0.11

    inverted = classification_metrics(-perfect, labels, multilabel=False)
    assert inverted["acc"] == 0.0 and inverted["AUC"] == 0.0 and inverted["d_prime"] == -math.inf


def test_accuracy_target_forms():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.5, 3.0], [1.0, 4.0, 0.0], [0.2, 0.1, 0.0]])
    indices = torch.tensor([0, 2, 0, 1])
    assert accuracy(logits, indices) == 0.5
    assert accuracy(logits, torch.nn.functional.one_hot(indices, 3).float()) == 0.5
    mixed = torch.tensor([[0.6, 0.4, 0.0], [0.0, 0.45, 0.55], [0.52, 0.0, 0.48], [0.3, 0.7, 0.0]])
    assert accuracy(logits, mixed) == 0.5  # the argmax of a mixup target is the class
    with pytest.raises(ValueError, match="no positive"):
        accuracy(logits, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="shape"):
        accuracy(logits, torch.zeros(4, 2))


def test_d_prime():
    assert d_prime(0.5) == 0.0
    assert math.isclose(d_prime(0.8413447460685429), math.sqrt(2), rel_tol=1e-9)  # Phi(1)
    assert math.isclose(d_prime(0.2), -d_prime(0.8))
    values = d_prime(torch.tensor([0.5, 0.9], dtype=torch.float64))
    assert values.shape == (2,) and math.isclose(values[1].item(), d_prime(0.9))


def test_errors_and_undefined_cases():
    scores = torch.rand(5, 3)
    with pytest.raises(ValueError, match="0/1"):
        roc_auc(scores, torch.full((5, 3), 0.5))  # soft (mixup) targets
    with pytest.raises(ValueError, match="exactly one positive"):
        classification_metrics(scores, torch.ones(5, 3), multilabel=False)
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        classification_metrics(scores, torch.zeros(5, dtype=torch.long), multilabel=True)
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(torch.full((5, 3), math.nan), torch.zeros(5, 3))
    one_class = torch.zeros(5, 3)
    one_class[:, 0] = 1
    assert math.isnan(roc_auc(scores, one_class))  # no class has both kinds
    m = classification_metrics(scores, one_class, multilabel=True)
    assert math.isnan(m["AUC"]) and math.isnan(m["d_prime"]) and m["mAP"] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_map_auc_and_d_prime_agree_with_scikit_learn_and_scipy(seed, ties):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    targets = (rng.random((60, 5)) < 0.3).astype(int)
    targets[0], targets[1] = 1, 0  # every class has both outcomes
    scores = rng.standard_normal((60, 5)) + targets
    if ties:
        scores = np.round(scores, 1)
    assert mean_average_precision(scores, targets) == pytest.approx(
        sklearn_metrics.average_precision_score(targets, scores, average="macro"), abs=1e-12)
    auc = roc_auc(scores, targets)
    assert auc == pytest.approx(sklearn_metrics.roc_auc_score(targets, scores, average="macro"), abs=1e-12)
    assert d_prime(auc) == pytest.approx(np.sqrt(2) * stats.norm.ppf(auc), abs=1e-9)
