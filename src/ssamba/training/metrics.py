"""Evaluation metrics of SSAST / SSAMBA fine-tuning: accuracy, mAP, ROC AUC, d-prime.

Pure torch (no sklearn / scipy at run time; tests/training/test_metrics.py checks them against
scikit-learn and scipy). Ranking metrics follow sklearn's definitions, ties
included: average precision as ``average_precision_score`` (step-wise, one step per
distinct score) and ROC AUC as ``roc_auc_score`` (tied positive/negative pairs count 1/2).
Class averages are macro (unweighted means over classes).

Scores are used as given: pass probabilities (sigmoid / softmax) or logits as you wish;
SSAST evaluates on sigmoid outputs. Accuracy only uses the argmax, so it is unaffected.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray


def _as_2d_scores(scores: ArrayLike) -> Tensor:
    scores = torch.as_tensor(scores).detach().cpu().double()
    if scores.dim() != 2:
        raise ValueError(f"scores must be (B, C), got shape {tuple(scores.shape)}")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores contain NaN or infinite values")
    return scores


def _as_binary_targets(targets: ArrayLike, scores: Tensor) -> Tensor:
    """``(B, C)`` 0/1 float64 targets from ``(B, C)`` multi-hot or ``(B,)`` class indices."""
    targets = torch.as_tensor(targets).detach().cpu()
    batch, num_classes = scores.shape
    if targets.dim() == 1:
        if targets.is_floating_point() or targets.dtype == torch.bool:
            raise ValueError(f"1-D targets must be integer class indices, got {targets.dtype}")
        if targets.shape[0] != batch:
            raise ValueError(f"{targets.shape[0]} targets for {batch} score rows")
        if batch and (targets.min() < 0 or targets.max() >= num_classes):
            raise ValueError(f"class indices must be in [0, {num_classes}), got {targets.min()}..{targets.max()}")
        return torch.nn.functional.one_hot(targets.long(), num_classes).double()
    if targets.shape != scores.shape:
        raise ValueError(f"targets shape {tuple(targets.shape)} does not match scores {tuple(scores.shape)}")
    targets = targets.double()
    if not bool(((targets == 0) | (targets == 1)).all()):
        raise ValueError(
            "ranking metrics need 0/1 targets; got soft values (mixup targets are for training only)"
        )
    return targets


def accuracy(logits: ArrayLike, targets: ArrayLike) -> float:
    """Share of rows whose top-scoring class is the target class.

    ``logits`` ``(B, C)``; ``targets`` ``(B,)`` class indices or ``(B, C)`` one-hot,
    multi-hot or mixed (the target class is then the row's argmax, as in SSAST).
    """
    scores = _as_2d_scores(logits)
    targets = torch.as_tensor(targets).detach().cpu()
    if targets.dim() == 2:
        if targets.shape != scores.shape:
            raise ValueError(f"targets shape {tuple(targets.shape)} does not match logits {tuple(scores.shape)}")
        if bool((targets.amax(dim=1) <= 0).any()):
            raise ValueError("some target rows have no positive class; accuracy is undefined for them")
        targets = targets.argmax(dim=1)
    elif targets.dim() != 1 or targets.shape[0] != scores.shape[0]:
        raise ValueError(f"targets must be (B,) or (B, C) with B={scores.shape[0]}, got {tuple(targets.shape)}")
    if scores.shape[0] == 0:
        raise ValueError("accuracy of an empty batch")
    return (scores.argmax(dim=1) == targets.long()).double().mean().item()


def _average_precision_1d(scores: Tensor, positive: Tensor) -> float:
    """sklearn's AP of one class: ``sum_k (R_k - R_{k-1}) P_k`` over distinct thresholds."""
    order = torch.argsort(scores, descending=True, stable=True)
    s, y = scores[order], positive[order]
    # last position of each run of equal scores: one threshold per distinct score
    last = torch.cat([s[1:] != s[:-1], torch.tensor([True])]).nonzero().flatten()
    tp = torch.cumsum(y, 0)[last]
    predicted = (last + 1).double()
    precision = tp / predicted
    recall = tp / tp[-1]
    recall_step = torch.diff(recall, prepend=torch.zeros(1, dtype=recall.dtype))
    return (recall_step * precision).sum().item()


def _average_ranks(values: Tensor) -> Tensor:
    """1-based ranks of ``values`` ``(N,)`` with ties given their average rank."""
    sorted_values, order = torch.sort(values, stable=True)
    _, inverse, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts  # 0-based start of each tie group
    group_rank = starts.double() + (counts.double() + 1) / 2
    ranks = torch.empty_like(values, dtype=torch.float64)
    ranks[order] = group_rank[inverse]
    return ranks


def _roc_auc_1d(scores: Tensor, positive: Tensor) -> float:
    """P(score of a random positive > score of a random negative), ties counting 1/2."""
    num_pos = positive.sum().item()
    num_neg = positive.numel() - num_pos
    rank_sum = _average_ranks(scores)[positive.bool()].sum().item()
    return (rank_sum - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg)


def average_precision_per_class(scores: ArrayLike, targets: ArrayLike) -> Tensor:
    """AP of each class ``(C,)``; NaN for classes without a positive."""
    scores = _as_2d_scores(scores)
    targets = _as_binary_targets(targets, scores)
    out = torch.full((scores.shape[1],), math.nan, dtype=torch.float64)
    for c in range(scores.shape[1]):
        if targets[:, c].sum() > 0:
            out[c] = _average_precision_1d(scores[:, c], targets[:, c])
    return out


def roc_auc_per_class(scores: ArrayLike, targets: ArrayLike) -> Tensor:
    """ROC AUC of each class ``(C,)``; NaN for classes lacking positives or negatives."""
    scores = _as_2d_scores(scores)
    targets = _as_binary_targets(targets, scores)
    out = torch.full((scores.shape[1],), math.nan, dtype=torch.float64)
    for c in range(scores.shape[1]):
        num_pos = targets[:, c].sum().item()
        if 0 < num_pos < targets.shape[0]:
            out[c] = _roc_auc_1d(scores[:, c], targets[:, c])
    return out


def _nanmean(values: Tensor) -> float:
    valid = values[~torch.isnan(values)]
    return valid.mean().item() if valid.numel() else math.nan


def mean_average_precision(scores: ArrayLike, targets: ArrayLike) -> float:
    """Macro mean of per-class AP over classes with at least one positive (NaN if none).

    ``scores`` ``(B, C)``; ``targets`` ``(B, C)`` 0/1 or ``(B,)`` class indices.
    """
    return _nanmean(average_precision_per_class(scores, targets))


def roc_auc(scores: ArrayLike, targets: ArrayLike) -> float:
    """Macro mean of per-class ROC AUC over classes with both positives and negatives (NaN if none).

    ``scores`` ``(B, C)``; ``targets`` ``(B, C)`` 0/1 or ``(B,)`` class indices.
    """
    return _nanmean(roc_auc_per_class(scores, targets))


def d_prime(auc: float | Tensor) -> float | Tensor:
    """Sensitivity index ``sqrt(2) * Phi^-1(auc)`` (0 at chance, +inf at AUC 1)."""
    if isinstance(auc, Tensor):
        return math.sqrt(2.0) * torch.special.ndtri(auc.double())
    return math.sqrt(2.0) * torch.special.ndtri(torch.tensor(float(auc), dtype=torch.float64)).item()


def classification_metrics(scores: ArrayLike, targets: ArrayLike, multilabel: bool) -> dict[str, float]:
    """``{"acc", "mAP", "AUC", "d_prime"}`` of ``scores`` ``(B, C)`` against ``targets``.

    ``multilabel=False``: targets are ``(B,)`` class indices or one-hot ``(B, C)`` (exactly
    one positive per row, checked). ``multilabel=True``: ``(B, C)`` 0/1 multi-hot; ``acc``
    then counts a row correct when its top-scoring class is the target's first positive,
    as SSAST computes it (mAP is the metric that matters for multi-label sets).
    """
    scores_t = _as_2d_scores(scores)
    targets_t = torch.as_tensor(targets).detach().cpu()
    if not multilabel and targets_t.dim() == 2:
        binary = _as_binary_targets(targets_t, scores_t)
        if not bool((binary.sum(dim=1) == 1).all()):
            raise ValueError("single-label targets must have exactly one positive per row (or pass multilabel=True)")
    if multilabel and targets_t.dim() != 2:
        raise ValueError(f"multi-label targets must be (B, C), got shape {tuple(targets_t.shape)}")
    auc = roc_auc(scores_t, targets_t)
    return {
        "acc": accuracy(scores_t, targets_t),
        "mAP": mean_average_precision(scores_t, targets_t),
        "AUC": auc,
        "d_prime": d_prime(auc) if not math.isnan(auc) else math.nan,
    }
