"""Precise BatchNorm statistics, so inference-mode embeddings are right after any run.

``keras.applications`` backbones average BatchNorm statistics with momentum
0.99-0.999.  On short runs (or early in long ones) the moving averages still
remember their initial values while the weights have moved on, and in
inference mode every image maps to nearly the same embedding, although the
training accuracy looks fine.  Recomputing the statistics as the plain average
over a few training batches ("precise BN", Wu & Johnson 2021) fixes that
whatever the momentum.
"""

from __future__ import annotations

import keras


def batchnorm_layers(model) -> list:
    """Every trainable BatchNormalization layer, nested models included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            if layer.trainable:
                found.append(layer)
        elif hasattr(layer, "layers"):
            found.extend(batchnorm_layers(layer))
    return found


class BatchNormCalibrator:
    """Set moving mean and variance to the average batch statistics of some batches.

    With momentum i/(i+1) at batch i the moving average becomes the exact
    running mean.  The momentum is a variable during the pass, so one traced
    graph serves every batch and every later call.
    """

    def __init__(self, model):
        import tensorflow as tf

        self.layers = batchnorm_layers(model)
        self.momentum = tf.Variable(0.0, trainable=False, dtype="float32")
        self.forward = tf.function(lambda images: model(images, training=True))

    def __call__(self, batches) -> int:
        """Recalibrate from ``batches`` of (images, labels); returns how many were used."""
        if not self.layers:
            return 0
        momenta = [layer.momentum for layer in self.layers]
        count = 0
        try:
            for layer in self.layers:
                layer.momentum = self.momentum
            for count, (images, _) in enumerate(batches, start=1):
                self.momentum.assign((count - 1) / count)
                self.forward(images)
        finally:
            for layer, value in zip(self.layers, momenta):
                layer.momentum = value
        return count


class BatchNormRecalibration(keras.callbacks.Callback):
    """Recalibrate BatchNorm at the end of each epoch, before validation runs."""

    def __init__(self, basic_model, dataset, batches: int, steps_per_epoch: int):
        super().__init__()
        self.calibrate = BatchNormCalibrator(basic_model)
        self.dataset, self.batches, self.steps_per_epoch = dataset, batches, steps_per_epoch
        self._iterator = None

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 < self.steps_per_epoch:
            return
        if self._iterator is None:  # one iterator: the shuffle buffer fills once
            self._iterator = iter(self.dataset)
        self.calibrate(next(self._iterator) for _ in range(self.batches))
