"""photogroup.evaluate.pairwise_scores: pairwise precision/recall/F1 and ARI."""

from __future__ import annotations

import itertools
import random

import pytest

from photogroup import pairwise_scores


def brute_force(truth, predicted):
    """Precision and recall by listing every pair: an independent oracle."""
    pairs = list(itertools.combinations(range(len(truth)), 2))
    same_true = {p for p in pairs if truth[p[0]] == truth[p[1]]}
    same_pred = {p for p in pairs if predicted[p[0]] == predicted[p[1]]}
    both = len(same_true & same_pred)
    precision = both / len(same_pred) if same_pred else 1.0
    recall = both / len(same_true) if same_true else 1.0
    return precision, recall


def test_perfect_grouping_scores_one():
    truth = ["a", "a", "b", "b", "b", "c"]
    predicted = ["g2", "g2", "g7", "g7", "g7", "g1"]  # same partition, other names
    assert pairwise_scores(truth, predicted) == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "ari": 1.0,
    }


def test_one_big_group_against_singletons():
    truth = ["a", "b", "c", "d", "e"]
    scores = pairwise_scores(truth, ["g"] * 5)
    assert scores["precision"] == 0.0
    assert scores["recall"] == 1.0  # no true pairs to miss
    assert scores["f1"] == 0.0
    assert scores["ari"] == 0.0


def test_singletons_against_one_true_group():
    scores = pairwise_scores(["a"] * 4, ["w", "x", "y", "z"])
    assert scores["precision"] == 1.0  # no predicted pairs to be wrong
    assert scores["recall"] == 0.0
    assert scores["f1"] == 0.0


def test_hand_computed_example():
    # truth     a a a b b b
    # predicted x x x x y y
    # Contingency: (a,x)=3, (b,x)=1, (b,y)=2 -> pairs together in both: 3 + 0 + 1 = 4.
    # Predicted pairs: C(4,2) + C(2,2) = 6 + 1 = 7.   True pairs: C(3,2) * 2 = 6.
    # precision = 4/7, recall = 4/6 = 2/3, f1 = 2 * (4/7)(2/3) / (4/7 + 2/3) = 8/13.
    # ARI: all pairs C(6,2) = 15, expected = 7 * 6 / 15 = 2.8, max = (7 + 6) / 2 = 6.5,
    #      ari = (4 - 2.8) / (6.5 - 2.8) = 1.2 / 3.7 = 12/37.
    scores = pairwise_scores(list("aaabbb"), list("xxxxyy"))
    assert scores["precision"] == pytest.approx(4 / 7)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(8 / 13)
    assert scores["ari"] == pytest.approx(12 / 37)


def test_second_hand_computed_example_with_chance_level_ari():
    # truth a a a b, predicted x x y y: together (a,x) C(2,2) = 1; predicted pairs 1 + 1 = 2;
    # true pairs C(3,2) = 3. precision 1/2, recall 1/3, f1 = (2 * 1/6) / (5/6) = 2/5.
    # expected = 2 * 3 / C(4,2) = 1 = together, so ari = 0.
    scores = pairwise_scores(list("aaab"), list("xxyy"))
    assert scores == pytest.approx({"precision": 0.5, "recall": 1 / 3, "f1": 0.4, "ari": 0.0})


def test_matches_brute_force_pair_counting():
    rng = random.Random(7)
    for _ in range(50):
        n = rng.randint(2, 25)
        truth = [rng.choice("abcde") for _ in range(n)]
        predicted = [rng.choice("vwxyz") for _ in range(n)]
        scores = pairwise_scores(truth, predicted)
        precision, recall = brute_force(truth, predicted)
        assert scores["precision"] == pytest.approx(precision)
        assert scores["recall"] == pytest.approx(recall)
        assert -1.0 <= scores["ari"] <= 1.0 + 1e-12


def test_swapping_truth_and_prediction_swaps_precision_and_recall():
    truth, predicted = list("aabbbcccc"), list("xxxyyyzzw")
    forward, backward = pairwise_scores(truth, predicted), pairwise_scores(predicted, truth)
    assert forward["precision"] == pytest.approx(backward["recall"])
    assert forward["recall"] == pytest.approx(backward["precision"])
    assert forward["f1"] == pytest.approx(backward["f1"])
    assert forward["ari"] == pytest.approx(backward["ari"])


def test_edge_cases():
    assert pairwise_scores([], [])["ari"] == 1.0
    assert pairwise_scores(["a"], ["x"])["precision"] == 1.0
    with pytest.raises(ValueError):
        pairwise_scores(["a", "b"], ["x"])
