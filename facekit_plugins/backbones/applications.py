"""``keras.applications`` backbones that take raw [0, 255] pixels, with face-sized BatchNorm momentum."""

from __future__ import annotations

import os

import keras

from facekit.errors import FacekitError
from facekit_plugins.backbones.blocks import ImagePreprocessing


def build_application(class_name, preprocessing, input_shape, weights, bn_momentum, **options):
    """A keras.applications model taking raw [0, 255] pixels, with BatchNorm momentum set."""
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    features = inputs if preprocessing is None else ImagePreprocessing(
        preprocessing, name="preprocessing")(inputs)
    try:
        model = getattr(keras.applications, class_name)(
            input_tensor=features, include_top=False, weights=resolve_weights(weights),
            **options)
    except FacekitError:
        raise
    except Exception as exc:
        if str(weights).lower() == "imagenet" and _is_download_error(exc):
            raise FacekitError(
                f"Could not download the ImageNet weights for {class_name} ({exc}); check the "
                "network, or use --backbone-opt weights=none or weights=PATH to a weights "
                "file.") from None
        raise
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and bn_momentum is not None:
            layer.momentum = float(bn_momentum)
    return model


def resolve_weights(weights):
    """``none`` -> None, ``imagenet`` stays, anything else must be an existing file."""
    if weights is None or str(weights).lower() in ("none", ""):
        return None
    if str(weights).lower() == "imagenet":
        return "imagenet"
    if not os.path.isfile(weights):
        raise FacekitError(
            f"The backbone weights file '{weights}' does not exist; use weights=none, "
            "weights=imagenet or the path of a weights file.")
    return os.fspath(weights)


def _is_download_error(exc):
    text = f"{type(exc).__name__} {exc}".lower()
    return any(word in text for word in ("url", "fetch", "download", "connection", "resolve"))
