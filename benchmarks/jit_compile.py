"""XLA on or off: training speed of facekit's default model, per device kind.

Keras' default ``jit_compile="auto"`` turns XLA on for the train step.  This
trains facekit's default model (MobileNetV2 → 512-d embedding → NormDense →
ArcFace, 112 px) with XLA off and on, in alternating rounds on the same
synthetic batches, and prints images/s of the steps after the first epoch
(which traces and compiles), the median per setting and the on/off ratio of
each round.  facekit's default (``--jit-compile`` unset) follows these
figures: off on CPUs, Keras' own choice on GPUs.

    python benchmarks/jit_compile.py [--steps 30] [--batch-size 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def images_per_second(jit_compile: bool, steps: int, batch_size: int, image_size: int) -> float:
    import keras
    import numpy as np
    import tensorflow as tf

    from facekit.model import build_model
    from facekit.components import resolve
    from facekit.registry import get_registry

    keras.utils.set_random_seed(0)
    classes = 100
    _, model = build_model(classes, "mobilenetv2", "normdense", image_size=image_size)
    loss = resolve(get_registry(), "loss", "arcface", {}).build()
    model.compile(optimizer=keras.optimizers.Adamax(1e-3), loss=loss, jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch_size * 4, image_size, image_size, 3), dtype=np.uint8)
    labels = rng.integers(0, classes, batch_size * 4).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size).repeat()

    class Clock(keras.callbacks.Callback):
        started = None
        seconds = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter() if epoch == 1 else None

        def on_epoch_end(self, epoch, logs=None):
            if self.started is not None:
                self.seconds = time.perf_counter() - self.started

    clock = Clock()
    model.fit(data, epochs=2, steps_per_epoch=steps, verbose=0, callbacks=[clock])
    return steps * batch_size / clock.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import tensorflow as tf

    kind = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    print(f"device: {kind} ({os.cpu_count()} CPU cores); MobileNetV2 + NormDense + ArcFace, "
          f"{args.image_size} px, batch {args.batch_size}, {args.steps} timed steps per run")
    rates = {False: [], True: []}
    for round_number in range(1, args.rounds + 1):
        for jit in (False, True):
            rates[jit].append(images_per_second(jit, args.steps, args.batch_size,
                                                args.image_size))
        print(f"round {round_number}: XLA off {rates[False][-1]:.1f} images/s, on "
              f"{rates[True][-1]:.1f} images/s, on/off {rates[True][-1] / rates[False][-1]:.2f}")
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"median: XLA off {off:.1f} images/s (1.00), on {on:.1f} images/s ({on / off:.2f})")
    print(f"faster on this {kind}: XLA {'on' if on > off else 'off'}")


if __name__ == "__main__":
    main()
