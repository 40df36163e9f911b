"""The verification protocol: hand-checked cases and an independent re-implementation."""

import numpy as np
import pytest

from facekit.eval.verification import (THRESHOLDS, evaluate_distances, evaluate_embeddings,
                                  fold_slices, kfold_accuracy, pair_distances, roc_auc,
                                  tar_at_far)


def unit(angle):
    return np.array([np.cos(angle), np.sin(angle)])


def test_hand_checked_embeddings():
    """Same pairs 0.195 apart, different pairs 2.0 apart: perfect from threshold 0.20."""
    cos_same = 0.9025  # squared distance of unit vectors = 2 - 2 cos = 0.195
    same = [(unit(a), unit(a + np.arccos(cos_same))) for a in np.linspace(0, 3, 10)]
    different = [(unit(a), unit(a + np.pi / 2)) for a in np.linspace(0, 3, 10)]
    first = np.array([p[0] for p in same + different]) * 5.0  # scale must not matter
    second = np.array([p[1] for p in same + different])
    issame = np.array([True] * 10 + [False] * 10)
    order = np.array([i for k in range(5) for i in (2 * k, 2 * k + 1, 10 + 2 * k, 11 + 2 * k)])
    np.testing.assert_allclose(pair_distances(first, second)[:10], 0.195, atol=1e-9)
    result = evaluate_embeddings(first[order], second[order], issame[order], folds=5)
    assert result.accuracy == 1.0 and result.accuracy_std == 0.0
    assert result.thresholds == pytest.approx([0.20] * 5)
    assert result.auc == 1.0
    assert result.tar_at_far == {}  # 10 negatives measure no FAR of 1e-2 or below
    assert "TAR@FAR=1e-03: not measured (10 different-person pairs; it needs 1,000)" in (
        result.summary())
    assert result.best_threshold_accuracy_optimistic == 1.0


def test_hand_checked_mistake_and_fold_threshold():
    # 2 folds of 4 pairs: fold 0 holds a same pair at distance 1.5 (too far).
    distances = np.array([0.1, 1.5, 2.0, 2.5, 0.2, 0.3, 2.2, 1.9])
    issame = np.array([1, 1, 0, 0, 1, 1, 0, 0], dtype=bool)
    accuracies, thresholds = kfold_accuracy(distances, issame, folds=2)
    # Fold 0 is tested at the first threshold perfect on fold 1: 0.31 -> 3/4 right.
    # Fold 1 is tested at the first best threshold of fold 0: 1.51 -> all right.
    assert thresholds.tolist() == pytest.approx([0.31, 1.51])
    assert accuracies.tolist() == [0.75, 1.0]


def independent_kfold(distances, issame, folds):
    """A loop-by-loop version of insightface's calculate_roc accuracy part."""
    n = len(distances)
    base, extra = divmod(n, folds)
    start, accuracies, chosen = 0, [], []
    for k in range(folds):
        size = base + (1 if k < extra else 0)
        test = list(range(start, start + size))
        start += size
        train = [i for i in range(n) if i not in test]
        best_acc, best_t = -1.0, None
        for t in THRESHOLDS:
            acc = sum((distances[i] < t) == issame[i] for i in train) / len(train)
            if acc > best_acc:
                best_acc, best_t = acc, t
        chosen.append(best_t)
        accuracies.append(sum((distances[i] < best_t) == issame[i] for i in test) / len(test))
    return np.array(accuracies), np.array(chosen)


@pytest.mark.parametrize("count,folds", [(60, 10), (47, 4), (33, 3)])
def test_fold_logic_matches_independent_implementation(count, folds):
    rng = np.random.default_rng(count)
    issame = rng.random(count) < 0.5
    distances = np.where(issame, rng.normal(0.9, 0.4, count), rng.normal(1.6, 0.4, count))
    distances = np.clip(distances, 0, 4)
    ours = kfold_accuracy(distances, issame, folds)
    theirs = independent_kfold(distances, issame, folds)
    np.testing.assert_allclose(ours[0], theirs[0])
    np.testing.assert_allclose(ours[1], theirs[1])
    assert sum(len(s) for s in fold_slices(count, folds)) == count


def test_auc_equals_mann_whitney_with_ties():
    rng = np.random.default_rng(3)
    distances = np.round(rng.uniform(0, 4, 200), 1)  # many ties
    issame = rng.random(200) < 0.4
    pos, neg = distances[issame], distances[~issame]
    wins = (pos[:, None] < neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert roc_auc(distances, issame) == pytest.approx(wins)


def test_tar_at_far():
    negatives = np.linspace(1.0, 2.0, 1000)
    positives = np.array([0.5, 0.9, 1.0005, 1.5])
    distances = np.concatenate([positives, negatives])
    issame = np.array([True] * 4 + [False] * 1000)
    tar, far, threshold = tar_at_far(distances, issame, 1e-3)
    # One false accept allowed: the threshold is the second-smallest negative.
    assert threshold == pytest.approx(negatives[1])
    assert far == pytest.approx(1e-3)
    assert tar == 0.75


def test_report_keys():
    rng = np.random.default_rng(0)
    issame = np.arange(20000) % 2 == 0
    result = evaluate_distances(np.where(issame, 0.5, 1.5) + rng.normal(0, 0.3, 20000),
                                issame, folds=10)
    data = result.to_dict()
    assert {"accuracy", "accuracy_std", "fold_accuracies", "thresholds", "auc",
            "tar_at_far", "best_threshold_accuracy_optimistic"} <= set(data)
    assert set(result.tar_at_far) == {"1e-02", "1e-03", "1e-04"}  # 10,000 negatives
    assert 0.9 < result.accuracy < 1.0
    assert "optimistic" in result.summary()
