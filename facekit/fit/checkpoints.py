"""Nothing lost: per-epoch checkpoints of the full training state, NaN guards, clean stops.

Each completed epoch saves the training model with its optimizer state to
``RUN/checkpoints/epoch-NNNN.keras`` (written to a temporary file, then
renamed) and records it in ``RUN/checkpoints/state.json``; the last few are
kept.  An epoch whose loss is NaN is never saved.  SIGINT (Ctrl-C) and
SIGTERM stop training at the next batch; the last completed epoch's
checkpoint is what ``facekit train --resume RUN`` continues from.
"""

from __future__ import annotations

import math
import os
import signal

import keras

from facekit.run_folder import ARCHITECTURE, Best, RunFolder, RunState


def has_nan(logs) -> bool:
    return any(isinstance(v, (int, float)) and math.isnan(v) for v in (logs or {}).values())


def architecture(config) -> dict:
    """The options of ``config`` that decide the network (recorded with each checkpoint)."""
    return {name: getattr(config, name) for name in ARCHITECTURE}


class EpochCheckpoint(keras.callbacks.Callback):
    """Save the full training state after every completed, finite epoch."""

    def __init__(self, run_dir, keep: int = 3, stopper=None, best=None,
                 architecture: dict | None = None):
        super().__init__()
        self.run, self.keep = RunFolder(run_dir), keep
        self.stopper, self.best, self.architecture = stopper, best, architecture

    def on_epoch_end(self, epoch, logs=None):
        if has_nan(logs):
            print(f"\nEpoch {epoch + 1} produced NaN; its weights are not saved.")
            return
        if self.stopper is not None and self.stopper.signal_name:
            return  # an interrupted epoch is incomplete: resume redoes it
        path = self.run.checkpoint(epoch + 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp.keras")
        self.model.save(temporary)
        os.replace(temporary, path)
        best = None
        if self.best is not None and self.best.best_epoch is not None:
            best = Best(float(self.best.best), int(self.best.best_epoch))
        stage = int(logs["stage"]) if "stage" in (logs or {}) else None
        self.run.write_state(RunState(epoch + 1, path.name, stage, best,
                                        self.architecture))
        for old in sorted(self.run.checkpoints.glob("epoch-*.keras"))[:-self.keep]:
            old.unlink()


class StopOnSignal(keras.callbacks.Callback):
    """Turn SIGINT/SIGTERM into a stop at the next batch end instead of a crash."""

    def __init__(self):
        super().__init__()
        self.signal_name = None
        self._previous = {}

    def _handle(self, number, frame):
        self.signal_name = signal.Signals(number).name
        if self.model is not None:
            self.model.stop_training = True

    def on_train_begin(self, logs=None):
        for number in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[number] = signal.signal(number, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass

    def on_train_end(self, logs=None):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()
