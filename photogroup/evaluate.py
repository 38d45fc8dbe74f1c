"""Pairwise precision/recall/F1 and adjusted Rand index of a grouping against labels.

Computed from the contingency table (Hubert & Arabie 1985), so no list of pairs is built.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def _pairs(count: int) -> int:
    return count * (count - 1) // 2


def pairwise_scores(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """Scores over all pairs of items; ``truth[i]`` and ``predicted[i]`` label item ``i``.

    Precision: share of predicted same-group pairs that are truly together. Recall: share
    of truly-together pairs predicted together. With no pairs on a side the score is 1.
    """
    if len(truth) != len(predicted):
        raise ValueError("truth and predicted must label the same items")
    together = sum(_pairs(c) for c in Counter(zip(truth, predicted, strict=True)).values())
    predicted_pairs = sum(_pairs(c) for c in Counter(predicted).values())
    true_pairs = sum(_pairs(c) for c in Counter(truth).values())
    precision = together / predicted_pairs if predicted_pairs else 1.0
    recall = together / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    all_pairs = _pairs(len(truth))
    expected = predicted_pairs * true_pairs / all_pairs if all_pairs else 0.0
    maximum = (predicted_pairs + true_pairs) / 2
    ari = (together - expected) / (maximum - expected) if maximum != expected else 1.0
    return {"precision": precision, "recall": recall, "f1": f1, "ari": ari}
