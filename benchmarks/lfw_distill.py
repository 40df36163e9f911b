"""Distillation and weight averaging on the LFW subset, against the teacher and the
baselines, in one run.

    python benchmarks/lfw_distill.py [--work DIR] [--epochs N] [--rows scratch,labels,no-labels]

The training images are the subset's identities that no pair names (prepared with
``facekit prepare --detect --template dlib --size 150``; the student reads them at
112x112); the 1,800 pairs (3 folds, flip-summed embeddings, mean ± std over folds)
are detected and aligned the same way.  Rows:

- the teacher, dlib's public-domain model (``--teacher dlib``) zero-shot on its own
  150x150 chips, and on the student's 112x112 chips resized to 150 (what it sees
  while teaching);
- raw pixels and the untrained student;
- the student (facekit's default recipe: MobileNetV2, 128-d, softmax, 25 epochs)
  trained from scratch, distilled with labels (``--teacher dlib``), and distilled
  without labels (``--teacher dlib --no-labels``), each run with ``--ema``: the
  "EMA" row is its saved basic model (the average), the other row the same run's
  trained weights (from model.keras, BatchNorm statistics recalibrated on 20
  training batches as every epoch's end does).  EMA does not change the training
  itself, so one run gives both.
- training images per second of each run, with and without the teacher.

The recipe is facekit's default and the teacher's weight its default (1.0):
nothing here was tuned on these pairs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lfw_pretrained import SHARED, _raw_pixels, _training_chips  # noqa: E402

ROWS = ("scratch", "labels", "no-labels")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "lfw_a_subset")
    parser.add_argument("--pairs", type=Path, default=SHARED / "lfw_a_subset_pairs.txt")
    parser.add_argument("--work", type=Path, default=None, help="Working folder (kept).")
    parser.add_argument("--epochs", type=int, default=None, help="Default: the recipe's.")
    parser.add_argument("--rows", default=",".join(ROWS), help=", ".join(ROWS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="A facekit.train option for every run (TOML value).")
    parser.add_argument("--speed", type=int, default=0, metavar="STEPS",
                        help="Only measure training speed: epochs of STEPS batches with "
                             "and without the teacher, and the teacher alone.")
    args = parser.parse_args()
    if not args.data.is_dir() or not args.pairs.is_file():
        print(f"LFW subset not found at {args.data}; nothing to do.")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = args.work or Path(tempfile.mkdtemp(prefix="facekit-distill-"))
    work.mkdir(parents=True, exist_ok=True)

    import tomllib

    import facekit
    from facekit.data.detect import FaceFinder
    from facekit.eval.pairs import read_pairs
    from facekit.eval.sets import VerificationSet, embed_set, verify_set

    vset = VerificationSet.from_pairs(args.data, args.pairs)
    finder = _DetectedOnce(FaceFinder(template="dlib"))
    rows = []

    def row(name, model, speed=None):
        embeddings, faceless = embed_set(model, vset, faces=finder)
        result, _ = verify_set(embeddings, vset)
        rows.append((name, result, speed))
        print(f"{name}: {result.accuracy:.4f} ± {result.accuracy_std:.4f}", flush=True)

    if args.speed:
        in_pairs = {name for a, _, b, _ in read_pairs(args.pairs).pairs for name in (a, b)}
        return _speed(_training_chips(args.data, work, in_pairs), work, args.speed)
    teacher = facekit.load_model(_teacher_run())
    row("teacher: dlib, zero-shot (150x150 chips)", teacher)
    row("teacher on the student's 112x112 chips", _resized(teacher, 112))
    rows.append(("raw pixels (112x112 chips)", _raw_pixels(vset, finder, 112), None))
    print(f"raw pixels: {rows[-1][1].accuracy:.4f}", flush=True)

    in_pairs = {name for a, _, b, _ in read_pairs(args.pairs).pairs for name in (a, b)}
    train = _training_chips(args.data, work, in_pairs)
    options = {"seed": args.seed, "verbose": 2, "ema": True}
    if args.epochs:
        options["epochs"] = args.epochs
    for item in args.set:
        key, value = item.split("=", 1)
        options[key] = tomllib.loads(f"v = {value}")["v"]
    untrained, _ = facekit.build_model(2, seed=args.seed)
    row("untrained student (MobileNetV2)", untrained)
    runs = {"scratch": ("from scratch (default recipe)", {}),
            "labels": ("distilled, with labels", {"teacher": "dlib"}),
            "no-labels": ("distilled, without labels", {"teacher": "dlib", "no_labels": True})}
    for key in args.rows.split(","):
        name, extra = runs[key]
        started = time.perf_counter()
        result = facekit.train(data=str(train), output=str(work / f"{key}-{int(time.time())}"),
                               **options, **extra)
        seconds = time.perf_counter() - started
        speed = result.images / result.seconds
        print(f"{name}: {result.images} images in {seconds / 60:.1f} min", flush=True)
        row(f"student {name}", _trained_weights(result, train), speed)
        row(f"student {name}, EMA", facekit.load_model(result.basic_model_path), speed)

    identities = [path for path in train.iterdir() if path.is_dir()]
    print(f"\nLFW subset: {len(vset.issame)} pairs, {vset.folds} folds; students trained on "
          f"{sum(len(os.listdir(i)) for i in identities)} images of {len(identities)} "
          f"identities no pair names; options {options}")
    print(f"{'':<52}{'accuracy':>18}{'AUC':>8}{'images/s':>10}")
    for name, res, speed in rows:
        shown = "" if speed is None else f"{speed:.1f}"
        print(f"{name:<52}{res.accuracy:>10.4f} ± {res.accuracy_std:.4f}{res.auc:>8.4f}"
              f"{shown:>10}")
    return 0


def _speed(train: Path, work: Path, steps: int) -> int:
    """Training images per second of the default recipe with and without the teacher
    (3 epochs of ``steps`` batches, the first one's tracing left out), and the teacher's
    own inference speed on the same batches: the share a per-image cache could save."""
    import tensorflow as tf

    import facekit

    import keras

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.started)

    speeds = {}
    for name, extra in (("without a teacher", {}), ("with --teacher dlib", {"teacher": "dlib"})):
        timer = Timer()
        timer.seconds = []
        result = facekit.train(data=str(train), output=str(work / f"speed-{int(time.time())}"),
                               epochs=3, steps_per_epoch=steps, verbose=0, callbacks=[timer],
                               **extra)
        per_epoch = result.images / 3
        speeds[name] = per_epoch * 2 / sum(timer.seconds[1:])  # the first one traces
    teacher = facekit.load_model(_teacher_run())
    forward = tf.function(lambda x: teacher(tf.image.resize(x, (150, 150), antialias=True),
                                            training=False))
    batch = tf.random.uniform((64, 112, 112, 3), 0, 255)
    forward(batch)
    started = time.perf_counter()
    for _ in range(steps):
        forward(batch)
    speeds["the teacher alone (inference)"] = 64 * steps / (time.perf_counter() - started)
    base = speeds["without a teacher"]
    print(f"\n{'training images/s':<40}{'':>10}{'ratio':>8}")
    for name, speed in speeds.items():
        print(f"{name:<40}{speed:>10.1f}{speed / base:>8.2f}")
    return 0


class _DetectedOnce:
    """A FaceFinder whose aligned faces are found once per size: every row embeds the
    same pair images (mtcnn on them takes minutes)."""

    def __init__(self, finder):
        self.finder, self.found = finder, {}

    def aligned_files(self, paths, size: int, **options):
        key = (tuple(map(str, paths)), size)
        if key not in self.found:
            self.found[key] = list(self.finder.aligned_files(paths, size, **options))
        return iter(self.found[key])


def _teacher_run() -> Path:
    from facekit.model.pretrained import resolve_model

    return resolve_model("dlib")


def _resized(model, size: int):
    """``model`` behind a resize from ``size``: what a teacher sees of a student's batch."""
    import keras

    images = keras.Input((size, size, 3))
    teacher_size = int(model.input_shape[1])
    pixels = keras.ops.image.resize(images, (teacher_size, teacher_size),  # as Distillation
                                    interpolation="bilinear", antialias=True)
    return keras.Model(images, model(pixels))


def _trained_weights(result, train: Path):
    """The run's last trained (not averaged) weights, BatchNorm recalibrated."""
    import facekit
    from facekit.data.sources import open_source
    from facekit.fit.batchnorm import BatchNormCalibrator
    from facekit.model import embedding_model

    model = embedding_model(facekit.load_model(result.model_path))
    source = open_source(train)
    source.load()
    data, _ = source.datasets(int(model.input_shape[1]), 64, seed=1)
    BatchNormCalibrator(model)(data.take(20))
    return model


if __name__ == "__main__":
    sys.exit(main())
