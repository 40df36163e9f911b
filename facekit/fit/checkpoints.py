"""Nothing lost: per-epoch checkpoints of the full training state, NaN guards, clean stops.

Each completed epoch saves the training model with its optimizer state to
``RUN/checkpoints/epoch-NNNN.keras`` (written to a temporary file, then
renamed) and records it in ``RUN/checkpoints/state.json``; the last few are
kept.  An epoch whose loss is NaN is never saved.  SIGINT (Ctrl-C) and
SIGTERM stop training at the next batch; the last completed epoch's
checkpoint is what ``facekit train --resume RUN`` continues from.
"""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import keras

STATE_FILE = "state.json"


def checkpoint_dir(run_dir) -> Path:
    return Path(run_dir) / "checkpoints"


def read_state(run_dir) -> dict | None:
    path = checkpoint_dir(run_dir) / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def has_nan(logs) -> bool:
    return any(isinstance(v, (int, float)) and math.isnan(v) for v in (logs or {}).values())


class EpochCheckpoint(keras.callbacks.Callback):
    """Save the full training state after every completed, finite epoch."""

    def __init__(self, run_dir, keep: int = 3, stopper=None, best=None):
        super().__init__()
        self.folder, self.keep = checkpoint_dir(run_dir), keep
        self.stopper, self.best = stopper, best

    def on_epoch_end(self, epoch, logs=None):
        if has_nan(logs):
            print(f"\nEpoch {epoch + 1} produced NaN; its weights are not saved.")
            return
        if self.stopper is not None and self.stopper.signal_name:
            return  # an interrupted epoch is incomplete: resume redoes it
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch + 1:04d}.keras"
        temporary = self.folder / f".{name}.tmp.keras"
        self.model.save(temporary)
        os.replace(temporary, self.folder / name)
        state = {"epoch": epoch + 1, "checkpoint": name}
        if "stage" in (logs or {}):
            state["stage"] = int(logs["stage"])
        if self.best is not None and self.best.best_epoch is not None:
            state["best"] = {"value": self.best.best, "epoch": self.best.best_epoch}
        (self.folder / STATE_FILE).write_text(json.dumps(state, indent=2))
        for old in sorted(self.folder.glob("epoch-*.keras"))[:-self.keep]:
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
