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


class HistoryFiles(keras.callbacks.Callback):
    """After each epoch, ``history.json`` and a ``training.png`` of the loss and accuracy.

    Both are made from ``history.csv`` (put this after the CSV logger), so a
    resumed run's files cover all of its epochs.
    """

    def __init__(self, run_dir: Path):
        super().__init__()
        self.run_dir = Path(run_dir)

    def on_epoch_end(self, epoch, logs=None):
        import json

        import pandas as pd

        table = pd.read_csv(self.run_dir / "history.csv")
        (self.run_dir / "history.json").write_text(
            json.dumps(table.to_dict(orient="records"), indent=1))
        plot_history(table, self.run_dir / "training.png")


def plot_history(table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = table["epoch"] + 1
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for column in (metric, f"val_{metric}"):
            if column in table:
                axis.plot(epochs, table[column], marker="o", label=column)
        if metric == "accuracy":
            for column in (c for c in table.columns if c.startswith("eval/")):
                axis.plot(epochs, table[column], marker="s", label=f"{column} (verification)")
        axis.set(xlabel="epoch", title=metric)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
