"""Partial FC against the full classifier: step time and memory at 10^4-10^6 identities.

For each number of identities, trains a small embedding network (in-memory
features -> dense -> embedding) with ArcFace under MirroredStrategy over
``--replicas`` logical CPU devices (8, as insightface's 8-GPU figures), once
with the ``normdense`` head (every replica holds the whole classifier, its
gradient and its optimizer state) and once with ``partial-fc`` per sampling
rate.  Each setting runs in its own process and reports:

- step time: the median of the timed steps, after a warm-up that traces;
- classifier memory per replica: the bytes of the classifier's weights, their
  gradient and the optimizer state one replica holds during a step, counted
  from the variables and the step's gradient shapes;
- peak RSS of the whole process (all replicas share this machine's memory).

Ratios are against ``normdense`` at the same size, measured in the same run.

    python benchmarks/partial_fc.py [--sizes 10000,100000,1000000] [--rates 0.1,0.3,1.0]
                                    [--replicas 8] [--embedding-size 64] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def measure(classes: int, head: str, rate: float, replicas: int, embedding_size: int,
            batch_per_replica: int, steps: int) -> dict:
    """One setting, in this process: step time and memory."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    import keras
    import numpy as np

    from facekit.fit.partial_fc import sample_size
    from facekit.model import build_training_model
    from facekit.components import resolve
    from facekit.registry import get_registry

    keras.utils.set_random_seed(0)
    strategy = (tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
                if replicas > 1 else tf.distribute.get_strategy())
    registry = get_registry()
    batch = batch_per_replica * replicas
    with strategy.scope():
        inputs = keras.Input((128,), name="image")
        hidden = keras.layers.Dense(256, activation="relu")(inputs)
        embedding = keras.layers.Dense(embedding_size, name="embedding")(hidden)
        basic = keras.Model(inputs, embedding, name="basic_model")
        options = {"sample_rate": rate} if head == "partial-fc" else {}
        model = build_training_model(basic, classes, resolve(registry, "head", head, options))
        loss = resolve(registry, "loss", "combined", {}).build()
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=loss,
                      jit_compile=False)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(batch * 4, 128)).astype("float32")
    labels = rng.integers(0, classes, batch * 4).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((features, labels)).batch(
        batch, drop_remainder=True).repeat()

    class Clock(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.started)

    times: list[float] = []
    model.fit(data, epochs=1, steps_per_epoch=2, verbose=0)  # traces
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[Clock()])
    row = embedding_size * 4  # bytes of one class center
    if head == "partial-fc":
        layer = model.get_layer("partial_fc")
        held = layer.rows * row * (1 + len(layer.slots))
        gradient = sample_size(classes, replicas, batch, rate) * row
    else:  # a mirrored kernel, a momentum of the same size, a dense gradient
        held, gradient = 2 * classes * row, classes * row
    return {"step_s": statistics.median(times), "classifier_mb": (held + gradient) / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--rates", default="0.1,0.3,1.0")
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--embedding-size", type=int, default=64)
    parser.add_argument("--batch-per-replica", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    common = (args.replicas, args.embedding_size, args.batch_per_replica, args.steps)
    if args.one:
        classes, head, rate = json.loads(args.one)
        print("RESULT " + json.dumps(measure(classes, head, rate, *common)))
        return 0

    settings = [("normdense", 1.0)] + [("partial-fc", float(r)) for r in args.rates.split(",")]
    print(f"{args.replicas} replicas (logical CPUs), global batch "
          f"{args.batch_per_replica * args.replicas}, {args.embedding_size}-d embedding, "
          f"ArcFace, SGD with momentum; median of {args.steps} steps")
    print(f"{'identities':>11} {'head':<16}{'step s':>9}{'x normdense':>13}"
          f"{'classifier MB/replica':>23}{'x normdense':>13}{'peak RSS MB':>13}")
    for classes in (int(float(s)) for s in args.sizes.split(",")):
        baseline = None
        for head, rate in settings:
            child = [sys.executable, __file__, "--one", json.dumps([classes, head, rate]),
                     "--replicas", str(args.replicas), "--embedding-size",
                     str(args.embedding_size), "--batch-per-replica",
                     str(args.batch_per_replica), "--steps", str(args.steps)]
            done = subprocess.run(child, capture_output=True, text=True)
            name = head if head == "normdense" else f"{head} {rate:g}"
            if done.returncode != 0:
                print(f"{classes:>11,} {name:<16} failed: {done.stderr.strip()[-300:]}")
                continue
            result = json.loads(done.stdout.split("RESULT ", 1)[1])
            baseline = baseline or result
            print(f"{classes:>11,} {name:<16}{result['step_s']:>9.3f}"
                  f"{result['step_s'] / baseline['step_s']:>13.3f}"
                  f"{result['classifier_mb']:>23.1f}"
                  f"{result['classifier_mb'] / baseline['classifier_mb']:>13.3f}"
                  f"{result['peak_rss_mb']:>13.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
