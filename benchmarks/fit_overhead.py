"""Overhead of facekit's training loop over a plain keras.Model.fit of the same model.

Both train the same model (same backbone, head, loss, optimizer, seed) on the
same images through the same input pipeline for the same steps; facekit's run
adds its callbacks (signal handling, NaN guard, per-epoch checkpoints,
history files and plot, and BatchNorm recalibration when on).  Two figures,
over the epochs after the first (which traces the graph), best of --repeats:

  steps   images/s of the training steps alone (epoch start to last batch end):
          the cost facekit adds to every step;
  epochs  images/s of whole epochs, end-of-epoch work included: facekit adds a
          fixed cost per epoch (checkpoint, files, recalibration), printed in
          seconds, which --steps scales against.  Real epochs last hours (2.4 h
          in the design notes), where it vanishes.

    python benchmarks/fit_overhead.py [--steps 300] [--epochs 3] [--repeats 2]
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
    """A callback timing epochs 2.. whole, and their training steps alone."""
    import keras

    class Clock(keras.callbacks.Callback):
        started = finished = steps = 0.0
        epoch_started = None

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_started = time.perf_counter() if epoch >= 1 else None
            if epoch == 1:
                self.started = self.epoch_started

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch_started is not None and batch + 1 == self.params["steps"]:
                self.steps += time.perf_counter() - self.epoch_started

        def on_train_end(self, logs=None):
            self.finished = time.perf_counter()

        def rates(self, images_per_epoch: int, epochs: int) -> dict:
            images = images_per_epoch * (epochs - 1)
            return {"steps": images / self.steps,
                    "epochs": images / (self.finished - self.started),
                    "fixed": ((self.finished - self.started) - self.steps) / (epochs - 1)}

    return Clock()


def plain_keras(index, steps: int, epochs: int) -> dict:
    """Images/s of model.fit with no callbacks but the clock, after the first epoch."""
    import keras

    from facekit.data.pipeline import make_dataset
    from facekit.model.build import build_model
    from facekit.fit.optimizers import make_optimizer
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
    return clock.rates(steps * SETUP["batch_size"], epochs)


def facekit_loop(folder, out: Path, steps: int, epochs: int, recalibration: int) -> dict:
    """Images/s of facekit.train, all its callbacks included, after the first epoch."""
    import facekit

    clock = make_clock()
    facekit.train(data=str(folder), output=str(out), epochs=epochs, steps_per_epoch=steps,
                  val_split=0.0, verbose=0, bn_recalibration_batches=recalibration,
                  callbacks=[clock], **SETUP)
    return clock.rates(steps * SETUP["batch_size"], epochs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="facekit-overhead-"))

    from facekit.data.demo import write_demo_dataset
    from facekit.data.sources import load_index

    folder = write_demo_dataset(work / "faces", identities=20, images_per_identity=40,
                                size=64, seed=0)
    index = load_index(folder)
    runs = {"keras": lambda r: plain_keras(index, args.steps, args.epochs),
            "facekit": lambda r: facekit_loop(folder, work / f"a{r}", args.steps, args.epochs,
                                              recalibration=0),
            "facekit+recalibration": lambda r: facekit_loop(
                folder, work / f"b{r}", args.steps, args.epochs, recalibration=20)}
    best = {name: {"steps": 0.0, "epochs": 0.0, "fixed": float("inf")} for name in runs}
    for repeat in range(args.repeats):  # the runs alternate; the best of each figure counts
        for name, run in runs.items():
            rates = run(repeat)
            best[name] = {"steps": max(best[name]["steps"], rates["steps"]),
                          "epochs": max(best[name]["epochs"], rates["epochs"]),
                          "fixed": min(best[name]["fixed"], rates["fixed"])}
    print(f"\n{SETUP['backbone']} {SETUP['image_size']}px, batch {SETUP['batch_size']}, "
          f"{args.steps} steps/epoch, epochs 2-{args.epochs}, best of {args.repeats}")
    keras_rates = best["keras"]
    for name, rates in best.items():
        print(f"{name:<22} steps {rates['steps']:7.1f} images/s (ratio "
              f"{rates['steps'] / keras_rates['steps']:.3f})   whole epochs "
              f"{rates['epochs']:7.1f} images/s (ratio {rates['epochs'] / keras_rates['epochs']:.3f})"
              f"   end-of-epoch work {rates['fixed']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
