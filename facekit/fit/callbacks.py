"""Training callbacks: verification after each epoch, and keeping the best basic model."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from facekit.run_folder import RunFolder


def _basic_model(callback) -> keras.Model:
    """The basic model inside the training model, whichever stage's model that is."""
    from facekit.model.build import BASIC_MODEL

    return callback.model.get_layer(BASIC_MODEL)


class AveragedWeights:
    """``--ema``: the optimizer's average of the weights takes the weights' place for
    validation and for the end of each epoch, between ``swap_in`` (put it before the
    callbacks that measure or save the model) and ``swap_out`` (before the checkpoint,
    which keeps the trained weights, and their average in the optimizer, so a run
    resumes exactly).  Swapping exchanges the two values, as Keras' SwapEMAWeights does.
    """

    def __init__(self):
        self.averaged = False
        self.swap_in = _Swap(self, True)
        self.swap_out = _Swap(self, False)

    @staticmethod
    def swap(model) -> None:
        """Exchange the model's trainable weights and their averages, once."""
        optimizer = model.optimizer
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # loss scaling
        averages = getattr(optimizer, "_model_variables_moving_average", None)
        if not averages:
            return  # not built yet: no step was taken
        for variable, average in zip(optimizer._trainable_variables, averages):
            value = keras.ops.convert_to_numpy(variable)
            variable.assign(average)
            average.assign(value)

    def set(self, model, averaged: bool) -> None:
        if self.averaged != averaged:
            self.swap(model)
            self.averaged = averaged


class _Swap(keras.callbacks.Callback):
    def __init__(self, weights: AveragedWeights, averaged: bool):
        super().__init__()
        self.weights, self.averaged = weights, averaged

    def on_test_begin(self, logs=None):  # validation during fit measures the average
        if self.averaged:
            self.weights.set(self.model, True)

    def on_test_end(self, logs=None):
        if self.averaged:
            self.weights.set(self.model, False)

    def on_epoch_end(self, epoch, logs=None):
        self.weights.set(self.model, self.averaged)


class VerificationCallback(keras.callbacks.Callback):
    """Run evaluation protocols after every epoch and log each one's headline score as
    ``eval/<name>`` (verification accuracy, IJB TAR at FAR 1e-4, rank-1 accuracy).

    Put it before the loggers: it adds its figures to the epoch's logs.

    Args:
        protocols: ``facekit.eval.protocols`` objects.
        basic_model: the model to evaluate (default: the training model's basic model).
        batch_size: images per batch.
    """

    def __init__(self, protocols, basic_model=None, batch_size: int = 64):
        super().__init__()
        self.protocols, self.basic_model, self.batch_size = protocols, basic_model, batch_size

    def on_epoch_end(self, epoch, logs=None):
        basic_model = self.basic_model or _basic_model(self)
        for protocol in self.protocols:
            report = protocol.evaluate(basic_model, batch_size=self.batch_size)
            if logs is not None:
                logs[f"eval/{protocol.name}"] = report.score
            spread = (f" ± {report.result.accuracy_std:.4f}"
                      if report.kind == "verification" else "")
            print(f"\neval/{protocol.name}: {report.score:.4f}{spread}")


class BestModelCheckpoint(keras.callbacks.Callback):
    """Save the basic model when ``monitor`` improves; a NaN never counts as better.

    One instance serves every stage of a run, so the best is the run's best.
    """

    def __init__(self, path: Path, monitor: str, basic_model=None):
        super().__init__()
        self.path, self.monitor, self.basic_model = Path(path), monitor, basic_model
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
            (self.basic_model or _basic_model(self)).save(self.path)


class StageLog(keras.callbacks.Callback):
    """Log the stage number with every epoch, so history files and plots show stages."""

    def __init__(self, stage: int):
        super().__init__()
        self.stage = stage

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["stage"] = self.stage


class RunProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress output counting the run's epochs, not the stage's: a staged run
    of 5 epochs shows "Epoch 3/5" in its second stage, where Keras would restart."""

    def __init__(self, total_epochs: int):
        super().__init__()
        self.total_epochs = total_epochs

    def set_params(self, params):
        super().set_params(params)
        self.epochs = self.total_epochs


class AverageStatistics(keras.callbacks.Callback):
    """Average the non-trainable weights (BatchNorm statistics) over the workers
    at each epoch end: each worker updates them from its own data, while the
    strategy keeps only the trainable weights in step."""

    def __init__(self, strategy):
        super().__init__()
        self.strategy = strategy

    def on_epoch_end(self, epoch, logs=None):
        variables = [v for v in self.model.non_trainable_variables
                     if "float" in str(v.dtype)]
        if not variables:
            return
        ops = keras.ops
        flat = lambda: ops.concatenate([ops.reshape(ops.cast(v.value, "float32"), [-1])
                                        for v in variables])  # one collective for all
        local = self.strategy.experimental_distribute_values_from_function(lambda _: flat())
        mean = self.strategy.reduce("MEAN", local, axis=None)
        start = 0
        for variable in variables:
            size = int(np.prod(variable.shape))
            variable.assign(ops.cast(ops.reshape(mean[start:start + size], variable.shape),
                                     variable.dtype))
            start += size


class DroppedLog(keras.callbacks.Callback):
    """Say at the end of each epoch how many training batches could not be read (and
    were skipped), and log the count as ``dropped_batches``."""

    def __init__(self, dropped):
        super().__init__()
        self.dropped = dropped

    def on_epoch_end(self, epoch, logs=None):
        count = self.dropped.take()
        if count:
            print(f"\nEpoch {epoch + 1}: skipped {count} batch(es) that could not be read "
                  "(an image broken since indexing, or a truncated shard); run facekit index "
                  "--rebuild on the data to list the files.")
            if logs is not None:
                logs["dropped_batches"] = count


class HistoryFiles(keras.callbacks.Callback):
    """After each epoch, ``history.csv``, ``history.json`` and a ``training.png`` of
    the loss and accuracy, covering every epoch of the run (resumed ones too).

    Unlike Keras' CSVLogger it adds no empty ``val_*`` columns to runs without
    validation data, and it takes in columns that appear in a later stage.
    """

    def __init__(self, run_dir: Path, keep_before: int | None = None):
        super().__init__()
        self.run, self.keep_before = RunFolder(run_dir), keep_before

    def on_train_begin(self, logs=None):
        import pandas as pd

        path = self.run.history_csv
        if self.keep_before is None:
            path.unlink(missing_ok=True)
        elif path.exists():  # a resume redoes the epochs after its checkpoint: drop their rows
            table = pd.read_csv(path)
            if (table["epoch"] > self.keep_before).any():
                table[table["epoch"] <= self.keep_before].to_csv(path, index=False)

    def on_epoch_end(self, epoch, logs=None):
        import json

        import pandas as pd

        path = self.run.history_csv
        row = pd.DataFrame([{"epoch": epoch + 1,  # counted from 1, as the console does
                             **{k: _number(v) for k, v in (logs or {}).items()}}])
        table = pd.concat([pd.read_csv(path), row]) if path.exists() else row
        table.to_csv(path, index=False)
        self.run.history_json.write_text(json.dumps(table.to_dict(orient="records"), indent=1))
        plot_history(table.reset_index(drop=True), self.run.training_plot)


def _number(value):
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def plot_history(table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = table["epoch"]
    # Each stage's curve is drawn apart: stages differ in loss (softmax's 4 against
    # ArcFace's 36), so one line through them would look like divergence.
    stages = ([table["stage"] == number for number in table["stage"].dropna().unique()]
              if "stage" in table else [table["epoch"] == table["epoch"]])
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        columns = [(c, "o", c) for c in (metric, f"val_{metric}") if c in table]
        if metric == "loss" and "distill_loss" in table:  # --teacher: its share of the loss
            columns.append(("distill_loss", "^", "distillation loss"))
        if metric == "accuracy":
            columns += [(c, "s", f"{c} (verification)") for c in table.columns
                        if c.startswith("eval/")]
        for column, marker, label in columns:
            color = None
            for number, rows in enumerate(stages):
                line, = axis.plot(epochs[rows], table[column][rows], marker=marker,
                                  color=color, label=label if number == 0 else None)
                color = line.get_color()
        if "stage" in table:  # staged training: a dashed line where each stage begins
            starts = table.index[table["stage"].diff().fillna(0) != 0]
            for start in starts:
                axis.axvline(epochs[start] - 0.5, color="gray", linestyle="--")
                axis.annotate(f"stage {table['stage'][start]}", (epochs[start] - 0.5, 1),
                              xycoords=("data", "axes fraction"), va="top", fontsize=8)
        axis.set(xlabel="epoch", title=metric)
        if columns:
            axis.legend()
        else:  # no labels: no accuracy
            axis.text(0.5, 0.5, f"no {metric} (trained without labels)", ha="center",
                      transform=axis.transAxes)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
