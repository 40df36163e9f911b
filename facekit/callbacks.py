"""Training callbacks: verification after each epoch, and keeping the best basic model."""

from __future__ import annotations

import math
from pathlib import Path

import keras


class VerificationCallback(keras.callbacks.Callback):
    """Run verification on each set after every epoch and log ``eval/<name>`` accuracies.

    Put it before the loggers: it adds its figures to the epoch's logs.
    """

    def __init__(self, basic_model, sets, batch_size: int = 64):
        super().__init__()
        self.basic_model, self.sets, self.batch_size = basic_model, sets, batch_size

    def on_epoch_end(self, epoch, logs=None):
        from facekit.evaluation import evaluate_set

        for vset in self.sets:
            result, _ = evaluate_set(self.basic_model, vset, batch_size=self.batch_size)
            if logs is not None:
                logs[f"eval/{vset.name}"] = result.accuracy
            print(f"\neval/{vset.name}: {result.accuracy:.4f} ± {result.accuracy_std:.4f}")


class BestModelCheckpoint(keras.callbacks.Callback):
    """Save the basic model when ``monitor`` improves; a NaN never counts as better."""

    def __init__(self, basic_model, path: Path, monitor: str):
        super().__init__()
        self.basic_model, self.path, self.monitor = basic_model, Path(path), monitor
        self.higher_is_better = "loss" not in monitor
        self.best = -math.inf if self.higher_is_better else math.inf
        self.best_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(f"'{self.monitor}' is not logged; logged: {sorted(logs or {})}")
        value = float(value)
        if math.isnan(value):
            return
        if value > self.best if self.higher_is_better else value < self.best:
            self.best, self.best_epoch = value, epoch
            self.basic_model.save(self.path)
