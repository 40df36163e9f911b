"""Precise BatchNorm recalibration."""

import keras
import numpy as np

from facekit.fit.batchnorm import BatchNormCalibrator, batchnorm_layers


def test_moving_statistics_become_the_average_of_batch_statistics():
    inner = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization(momentum=0.999)])
    model = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(2),
                              keras.layers.BatchNormalization(momentum=0.99)])
    layer = batchnorm_layers(model)[0]
    assert len(batchnorm_layers(model)) == 2
    rng = np.random.default_rng(0)
    batches = [(rng.normal(loc=5.0, scale=2.0, size=(16, 3)).astype("float32"), None)
               for _ in range(4)]
    assert BatchNormCalibrator(model)(batches) == 4
    means = np.mean([b.mean(axis=0) for b, _ in batches], axis=0)
    variances = np.mean([b.var(axis=0) for b, _ in batches], axis=0)
    np.testing.assert_allclose(layer.moving_mean.numpy(), means, rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), variances, rtol=1e-4)
    assert layer.momentum == 0.999  # restored, and still serializable
    assert layer.get_config()["momentum"] == 0.999


def test_frozen_batchnorm_is_left_alone():
    model = keras.Sequential([keras.Input((2,)), keras.layers.BatchNormalization()])
    model.layers[0].trainable = False
    assert batchnorm_layers(model) == []
    assert BatchNormCalibrator(model)([(np.ones((4, 2), "float32"), None)]) == 0
