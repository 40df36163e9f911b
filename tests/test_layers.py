"""NormDense and ImagePreprocessing against NumPy."""

import keras
import numpy as np
import pytest

from facekit_plugins.backbones.blocks import ImagePreprocessing
from facekit_plugins.heads import normdense_head
from facekit_plugins.heads.normdense import NormDense


def test_normdense_outputs_cosine():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 8)).astype(np.float32) * 7
    layer = normdense_head(3)
    out = keras.ops.convert_to_numpy(layer(x))
    w = keras.ops.convert_to_numpy(layer.kernel)
    expected = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(out) <= 1 + 1e-6)


def test_normdense_without_embedding_normalization():
    x = np.array([[3.0, 4.0]], dtype=np.float32)
    layer = NormDense(1, normalize_embedding=False, append_norm=False,
                      kernel_initializer="ones")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), [[7 / np.sqrt(2)]],
                               rtol=1e-6)


def test_normdense_config_round_trip():
    layer = NormDense(4, normalize_embedding=False, append_norm=False, name="nd")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(clone, NormDense)
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize("mode", ImagePreprocessing.MODES)
def test_image_preprocessing_matches_keras_applications(mode):
    from keras.src.applications.imagenet_utils import preprocess_input

    pixels = np.random.default_rng(1).uniform(0, 255, size=(2, 4, 4, 3)).astype(np.float32)
    ours = keras.ops.convert_to_numpy(ImagePreprocessing(mode)(pixels))
    theirs = preprocess_input(pixels.copy(), mode=mode)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)
