"""Face verification metrics, as insightface computes them (NumPy only).

Pairs are scored by the squared Euclidean distance of L2-normalized
embeddings (0 = same direction, 4 = opposite).  Accuracy uses K folds in file
order: each fold is scored at the threshold that maximizes accuracy on the
other K-1 folds, so the reported accuracy never sees its own test pairs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

THRESHOLDS = np.arange(0.0, 4.0, 0.01)
# The false accept rates facekit reports TAR and thresholds at, each only where the
# different-person pairs can measure it (1e-3 needs 1,000 of them).
FAR_TARGETS = (1e-2, 1e-3, 1e-4)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pair_distances(embeddings1: np.ndarray, embeddings2: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance between matching rows, after L2 normalization."""
    diff = l2_normalize(embeddings1) - l2_normalize(embeddings2)
    return np.sum(diff * diff, axis=1)


def fold_slices(count: int, folds: int) -> list[np.ndarray]:
    """Indices of each fold, in order (scikit-learn's KFold without shuffling)."""
    sizes = np.full(folds, count // folds)
    sizes[: count % folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [np.arange(bounds[k], bounds[k + 1]) for k in range(folds)]


def accuracy_at(distances, issame, threshold) -> float:
    return float(np.mean((distances < threshold) == issame))


def kfold_accuracy(distances, issame, folds=10, thresholds=THRESHOLDS):
    """Per-fold accuracies and the thresholds chosen on the other folds."""
    issame = np.asarray(issame, dtype=bool)
    predictions = distances[None, :] < thresholds[:, None]  # (thresholds, pairs)
    correct = predictions == issame[None, :]
    accuracies, chosen = [], []
    for test in fold_slices(len(distances), folds):
        train = np.setdiff1d(np.arange(len(distances)), test)
        best = int(np.argmax(correct[:, train].mean(axis=1)))
        chosen.append(float(thresholds[best]))
        accuracies.append(float(correct[best, test].mean()))
    return np.array(accuracies), np.array(chosen)


def roc_curve(distances, issame):
    """False and true accept rates as the threshold sweeps over every distance."""
    issame = np.asarray(issame, dtype=bool)
    order = np.argsort(distances, kind="mergesort")
    same_sorted = issame[order]
    tpr = np.concatenate([[0.0], np.cumsum(same_sorted) / max(issame.sum(), 1)])
    fpr = np.concatenate([[0.0], np.cumsum(~same_sorted) / max((~issame).sum(), 1)])
    # Tied distances cannot be split by any threshold: keep the last point of each tie.
    sorted_d = distances[order]
    keep = np.concatenate([[True], np.append(sorted_d[1:] != sorted_d[:-1], True)])
    return fpr[keep], tpr[keep]


def roc_auc(distances, issame) -> float:
    fpr, tpr = roc_curve(distances, issame)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # trapezoid rule


def tar_at_far(distances, issame, far: float):
    """True accept rate at the strictest threshold whose false accept rate is <= ``far``.

    Returns (tar, achieved far, threshold).
    """
    issame = np.asarray(issame, dtype=bool)
    negatives = np.sort(distances[~issame])
    allowed = int(np.floor(far * len(negatives)))
    threshold = negatives[allowed] if allowed < len(negatives) else np.inf
    accepted = distances < threshold
    return (float(accepted[issame].mean()), float(accepted[~issame].mean()), float(threshold))


@dataclass
class VerificationResult:
    """Everything ``facekit eval`` reports."""

    accuracy: float  # mean over folds
    accuracy_std: float
    fold_accuracies: list[float]
    thresholds: list[float]
    auc: float
    tar_at_far: dict[str, dict] = field(default_factory=dict)
    best_threshold_accuracy_optimistic: float = 0.0
    best_threshold_optimistic: float = 0.0
    pairs: int = 0
    same_pairs: int = 0
    folds: int = 10

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"pairs: {self.pairs} ({self.same_pairs} same, "
                 f"{self.pairs - self.same_pairs} different), {self.folds} folds",
                 f"accuracy: {self.accuracy:.4f} ± {self.accuracy_std:.4f} "
                 f"(mean ± std over folds)",
                 f"thresholds: {', '.join(f'{t:.2f}' for t in self.thresholds)}",
                 f"ROC AUC: {self.auc:.4f}"]
        negatives = self.pairs - self.same_pairs
        for far in FAR_TARGETS:
            name = f"{far:.0e}"
            value = self.tar_at_far.get(name)
            lines.append(f"TAR@FAR={name}: {value['tar']:.4f} (achieved FAR "
                         f"{value['far']:.2e})" if value is not None else
                         f"TAR@FAR={name}: not measured ({negatives} different-person pairs; "
                         f"it needs {int(1 / far):,})")
        lines.append(f"best-threshold accuracy on all pairs (optimistic, not a result): "
                     f"{self.best_threshold_accuracy_optimistic:.4f} at "
                     f"{self.best_threshold_optimistic:.2f}")
        return "\n".join(lines)


def evaluate_distances(distances, issame, folds: int = 10) -> VerificationResult:
    """The full protocol on precomputed pair distances."""
    distances = np.asarray(distances, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    accuracies, thresholds = kfold_accuracy(distances, issame, folds)
    whole = [accuracy_at(distances, issame, t) for t in THRESHOLDS]
    best = int(np.argmax(whole))
    negatives = int((~issame).sum())
    tar = {}
    for far in FAR_TARGETS:
        if negatives * far >= 1:
            value, achieved, threshold = tar_at_far(distances, issame, far)
            tar[f"{far:.0e}"] = {"tar": value, "far": achieved, "threshold": threshold}
    return VerificationResult(
        accuracy=float(accuracies.mean()), accuracy_std=float(accuracies.std()),
        fold_accuracies=accuracies.tolist(), thresholds=thresholds.tolist(),
        auc=roc_auc(distances, issame), tar_at_far=tar,
        best_threshold_accuracy_optimistic=whole[best],
        best_threshold_optimistic=float(THRESHOLDS[best]),
        pairs=len(distances), same_pairs=int(issame.sum()), folds=folds)


def evaluate_embeddings(embeddings1, embeddings2, issame, folds: int = 10
                        ) -> VerificationResult:
    return evaluate_distances(pair_distances(embeddings1, embeddings2), issame, folds)


def plot_verification(distances, issame, result: VerificationResult, path,
                      title: str = "") -> None:
    """ROC curve (on a log FAR axis, as the field reads it) and the distance histograms
    of same and different pairs, as PNG; ``title`` names the model and the set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    issame = np.asarray(issame, dtype=bool)
    fpr, tpr = roc_curve(np.asarray(distances), issame)
    figure, (roc_axis, hist_axis) = plt.subplots(1, 2, figsize=(11, 4.5))
    lowest = 1.0 / max(1, int((~issame).sum()))  # the smallest FAR the pairs can show
    shown = fpr >= lowest
    roc_axis.plot(fpr[shown], tpr[shown], label=f"AUC {result.auc:.4f}")
    roc_axis.set_xscale("log")
    roc_axis.set_xlim(lowest, 1)
    roc_axis.set(xlabel="false accept rate (log)", ylabel="true accept rate", title="ROC")
    roc_axis.legend(loc="lower right")
    bins = np.linspace(0, 4, 81)
    hist_axis.hist(distances[issame], bins=bins, alpha=0.6, label="same identity")
    hist_axis.hist(distances[~issame], bins=bins, alpha=0.6, label="different identities")
    hist_axis.axvline(np.median(result.thresholds), color="black", linestyle="--",
                      label="median fold threshold")
    hist_axis.set(xlabel="squared distance of normalized embeddings", ylabel="pairs",
                  title=f"accuracy {result.accuracy:.4f} ± {result.accuracy_std:.4f}")
    hist_axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
