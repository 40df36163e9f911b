"""Overhead of facekit's training loop over a plain keras.Model.fit of the same model.

Both train the same model (same backbone, head, loss, optimizer, seed) on the
same images through the same input pipeline for the same steps; facekit's run
adds its callbacks (signal handling, NaN guard, per-epoch checkpoints, CSV,
JSON and plot, and BatchNorm recalibration when on). Images/second are taken
over the epochs after the first (which traces the graph), and the runs
alternate, best of --repeats.

    python benchmarks/fit_overhead.py [--steps 60] [--epochs 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SETUP = dict(backbone="mobilenetv2", backbone_options={"alpha": 0.35}, head="normdense",
             loss="arcface", image_size=64, batch_size=32, embedding_size=128, seed=0)


def make_clock():
    """A callback timing everything from the start of epoch 2 to the end of training."""
    import keras

    class Clock(keras.callbacks.Callback):
        started = finished = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                self.started = time.perf_counter()

        def on_train_end(self, logs=None):
            self.finished = time.perf_counter()

    return Clock()


def plain_keras(index, steps: int, epochs: int) -> float:
    """Images/s of model.fit with no callbacks but the clock, after the first epoch."""
    import keras

    from facekit.data import make_dataset
    from facekit.model import build_model
    from facekit.optimizers import make_optimizer
    from facekit.registry import get_registry

    keras.utils.set_random_seed(SETUP["seed"])
    _, model = build_model(len(index.classes), SETUP["backbone"], SETUP["head"],
                           image_size=SETUP["image_size"],
                           embedding_size=SETUP["embedding_size"],
                           backbone_options=SETUP["backbone_options"])
    model.compile(optimizer=make_optimizer("adamax", 1e-3),
                  loss=get_registry().get("loss", SETUP["loss"]).build(),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    data = make_dataset(index, image_size=SETUP["image_size"], batch_size=SETUP["batch_size"],
                        training=True)
    clock = make_clock()
    model.fit(data, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[clock])
    return steps * SETUP["batch_size"] * (epochs - 1) / (clock.finished - clock.started)


def facekit_loop(folder, out: Path, steps: int, epochs: int, recalibration: int) -> float:
    """Images/s of facekit.train, all its callbacks included, after the first epoch."""
    import facekit

    clock = make_clock()
    facekit.train(data=str(folder), output=str(out), epochs=epochs, steps_per_epoch=steps,
                  val_split=0.0, verbose=0, bn_recalibration_batches=recalibration,
                  callbacks=[clock], **SETUP)
    return steps * SETUP["batch_size"] * (epochs - 1) / (clock.finished - clock.started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="facekit-overhead-"))

    from facekit.demo_data import write_demo_dataset
    from facekit.index import load_index

    folder = write_demo_dataset(work / "faces", identities=20, images_per_identity=40,
                                size=64, seed=0)
    index = load_index(folder)
    best = {"keras": 0.0, "facekit": 0.0, "facekit+recalibration": 0.0}
    for repeat in range(args.repeats):
        best["keras"] = max(best["keras"], plain_keras(index, args.steps, args.epochs))
        best["facekit"] = max(best["facekit"], facekit_loop(
            folder, work / f"a{repeat}", args.steps, args.epochs, recalibration=0))
        best["facekit+recalibration"] = max(best["facekit+recalibration"], facekit_loop(
            folder, work / f"b{repeat}", args.steps, args.epochs, recalibration=20))
    print(f"\n{SETUP['backbone']} {SETUP['image_size']}px, batch {SETUP['batch_size']}, "
          f"{args.steps} steps/epoch, epochs 2-{args.epochs}, best of {args.repeats}")
    for name, value in best.items():
        print(f"{name:<24}{value:8.1f} images/s   ratio to plain Keras "
              f"{value / best['keras']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
