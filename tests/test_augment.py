"""Augmentation levels and switches, as layers of the training model only."""

import numpy as np
import pytest

from facekit.data.augment import LEVELS, Augmentation, augmentation_layers, resolve_augmentation
from facekit.config import TrainConfig
from facekit.errors import FacekitError
from facekit.model.build import build_model


def test_levels_and_switches():
    assert resolve_augmentation("flip") == Augmentation()
    assert resolve_augmentation("none").is_identity()
    strong = resolve_augmentation("strong", flip=False, grayscale=0.5)
    assert (strong.flip, strong.grayscale, strong.contrast) == (False, 0.5, 0.2)
    with pytest.raises(FacekitError, match="augment must be one of none, flip, light, "
                                           "strong, got 'wild'"):
        TrainConfig(augment="wild").checked()
    with pytest.raises(FacekitError, match="brightness must be in \\[0, 1\\], got 2.0"):
        TrainConfig(brightness=2.0).checked()


@pytest.mark.parametrize("level", list(LEVELS))
def test_layers_keep_pixel_range_and_do_nothing_in_inference(level):
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3)).astype("uint8")
    augmented, inferred = images, images
    for layer in augmentation_layers(LEVELS[level]):
        augmented = layer(augmented, training=True)
        inferred = layer(inferred, training=False)
    augmented = np.asarray(augmented, dtype="float32")
    assert augmented.min() >= 0 and augmented.max() <= 255.001
    np.testing.assert_allclose(np.asarray(inferred, dtype="float32"), images)
    if level != "none":
        assert np.abs(augmented - images).mean() > 1.0


def test_training_model_flips_and_basic_model_has_no_augmentation():
    basic, model = build_model(3, "mobilenetv2", "softmax", image_size=32, embedding_size=8,
                               backbone_options={"alpha": 0.35},
                               augmentation=resolve_augmentation("strong"))
    names = [layer.name for layer in model.layers]
    assert names[1:4] == ["random_flip", "random_crop_resize", "random_brightness"]
    assert not any(name.startswith("random") for name in
                   [layer.name for layer in basic.layers])
    images = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    head = model.layers[-1]
    # Validation and prediction run in inference mode: no augmentation at all.
    np.testing.assert_allclose(np.asarray(model(images, training=False)),
                               np.asarray(head(basic(images, training=False))), rtol=1e-5,
                               atol=1e-6)


def test_random_erasing_replaces_one_rectangle_in_training_only():
    images = np.full((8, 32, 32, 3), 128, "uint8")
    [layer] = augmentation_layers(resolve_augmentation("none", erasing=1.0))
    erased = np.asarray(layer(images, training=True), dtype="float32")
    assert erased.min() >= 0 and erased.max() <= 255
    changed = (erased != 128).any(axis=-1)
    for mask in changed:  # one axis-aligned rectangle per image, 2-33% of its area
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        box = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert 0.5 * box.size <= mask.sum() and 0.01 <= box.size / mask.size <= 0.4
    np.testing.assert_array_equal(np.asarray(layer(images, training=False)), images)
    assert not augmentation_layers(resolve_augmentation("strong"))[-1].name.endswith("erasing")
