"""Backbones and necks side by side: parameters, FLOPs and CPU training speed.

For each model (a backbone with its default neck unless one is named) this
prints the parameters of the basic model at 112x112 with a 512-d embedding
(trainable, as PyTorch counts them), its multiply-accumulates per image
(convolutions and dense layers, counted from the layer shapes: the "FLOPs" of
the field's tables), and training images/s on this machine (normdense head,
ArcFace, batch 32, after a warm-up epoch), with each speed's ratio to the first
model's, measured in the same run.

    python benchmarks/models.py [--models mobilefacenet,ghostfacenet,iresnet50] [--steps 10]

A model is ``backbone`` or ``backbone:neck``, e.g. ``mobilenetv2:gdc``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_MODELS = ("mobilenetv2,mobilefacenet,ghostfacenet,iresnet18,iresnet50,iresnet100,"
                  "mobilenetv2:gdc,mobilefacenet:e,mobilefacenet:gnap")


def multiply_adds(model) -> int:
    """Multiply-accumulates of one image through ``model`` (nested models included)."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += multiply_adds(layer)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            h, w = layer.output.shape[1:3]
            total += h * w * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


def training_speed(basic_model, steps: int, batch_size: int) -> float:
    import keras
    import tensorflow as tf

    from facekit.model import build_training_model
    from facekit.components import resolve
    from facekit.registry import get_registry

    classes = 100
    registry = get_registry()
    model = build_training_model(basic_model, classes, resolve(registry, "head", "normdense", {}))
    model.compile(optimizer=keras.optimizers.Adamax(1e-3),
                  loss=resolve(registry, "loss", "arcface", {}).build(), jit_compile=False)
    rng = np.random.default_rng(0)
    size = basic_model.input_shape[1]
    images = rng.integers(0, 256, (batch_size * 2, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, classes, batch_size * 2).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size).repeat()
    model.fit(data, epochs=1, steps_per_epoch=2, verbose=0)  # trace and warm up
    started = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
    return steps * batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-speed", action="store_true", help="Only count.")
    args = parser.parse_args()

    import keras

    from facekit.model import build_model

    print(f"{'model':<22}{'neck':>6}{'params (M)':>12}{'MFLOPs':>9}{'img/s':>8}{'ratio':>7}")
    first = None
    for spec in args.models.split(","):
        backbone, _, neck = spec.partition(":")
        keras.utils.clear_session()
        keras.utils.set_random_seed(0)
        basic, _ = build_model(2, backbone, "normdense", neck=neck or None)
        params = sum(int(np.prod(w.shape)) for w in basic.trainable_weights)
        speed = None if args.no_speed else training_speed(basic, args.steps, args.batch_size)
        first = first or speed
        speed_text = "" if speed is None else f"{speed:>8.1f}{speed / first:>7.2f}"
        print(f"{backbone:<22}{neck or '(own)':>6}{params / 1e6:>12.3f}"
              f"{multiply_adds(basic) / 1e6:>9.0f}{speed_text}", flush=True)


if __name__ == "__main__":
    main()
