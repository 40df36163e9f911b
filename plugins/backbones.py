"""Built-in backbones: the face-native ones (IResNet, MobileFaceNet, GhostFaceNet)
and ``keras.applications`` models without their top.

Registration stays light: each factory's signature declares its options and
defaults, and the module that builds the Keras model is imported when called.
"""

from __future__ import annotations

import inspect
import os

from facekit import hookimpl
from facekit.errors import FacekitError

# name: (keras.applications class, preprocessing its weights expect, extra options)
# preprocessing None: the application includes its own (MobileNetV3).
APPLICATIONS = {
    "resnet50": ("ResNet50", "caffe", {}),
    "resnet101": ("ResNet101", "caffe", {}),
    "resnet152": ("ResNet152", "caffe", {}),
    "resnet50v2": ("ResNet50V2", "tf", {}),
    "resnet101v2": ("ResNet101V2", "tf", {}),
    "resnet152v2": ("ResNet152V2", "tf", {}),
    "mobilenet": ("MobileNet", "tf", {"alpha": 1.0, "depth_multiplier": 1}),
    "mobilenetv2": ("MobileNetV2", "tf", {"alpha": 1.0}),
    "mobilenetv3small": ("MobileNetV3Small", None, {"alpha": 1.0, "minimalistic": False}),
    "mobilenetv3large": ("MobileNetV3Large", None, {"alpha": 1.0, "minimalistic": False}),
    "efficientnetb0": ("EfficientNetB0", None, {}),
}

# BatchNorm momentum of insightface's backbones.  keras.applications use
# 0.99-0.999: on short runs their moving statistics never converge and every
# image gets the same embedding in inference mode.
DEFAULT_BN_MOMENTUM = 0.9


def build_application(class_name, preprocessing, input_shape, weights, bn_momentum, **options):
    """A keras.applications model taking raw [0, 255] pixels, with BatchNorm momentum set."""
    import keras

    from facekit_plugins.keras_layers import ImagePreprocessing

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


def application_factory(class_name, preprocessing, extra_options):
    """A factory whose signature lists the options users may set."""
    defaults = {"weights": "none", "bn_momentum": DEFAULT_BN_MOMENTUM, **extra_options}

    def factory(input_shape=(112, 112, 3), **options):
        return build_application(class_name, preprocessing, input_shape,
                                 **{**defaults, **options})

    params = [inspect.Parameter("input_shape", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                default=(112, 112, 3))]
    params += [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=value)
               for key, value in defaults.items()]
    factory.__signature__ = inspect.Signature(params)
    factory.__doc__ = f"keras.applications.{class_name} without its top."
    return factory


# IResNet: the number of blocks in each of its four stages, by depth.
IRESNET_DEPTHS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}


def iresnet_factory(depth: int):
    def factory(input_shape=(112, 112, 3), *, width=1.0, bn_momentum=DEFAULT_BN_MOMENTUM):
        from facekit_plugins.iresnet import iresnet

        return iresnet(input_shape, depth, width=width, bn_momentum=bn_momentum)

    factory.__doc__ = f"insightface's IResNet-{depth} (arcface_torch r{depth}); width scales it."
    return factory


def mobilefacenet(input_shape=(112, 112, 3), *, scale=2, blocks="1,4,6,2", features=512,
                  bn_momentum=DEFAULT_BN_MOMENTUM):
    """MobileFaceNet (arcface_torch mbf; mbf_large: scale=4, blocks=2,8,12,4)."""
    from facekit_plugins.mobilefacenet import mobilefacenet as build

    return build(input_shape, scale=scale, blocks=blocks, features=features,
                 bn_momentum=bn_momentum)


def ghostfacenet(input_shape=(112, 112, 3), *, width=1.3, strides=2,
                 bn_momentum=DEFAULT_BN_MOMENTUM):
    """GhostFaceNetV1 (GhostNet, PReLU); strides=1 for its S1 variant."""
    from facekit_plugins.ghostfacenet import ghostfacenet as build

    return build(input_shape, width=width, strides=strides, bn_momentum=bn_momentum)


@hookimpl
def facekit_register_backbones(register):
    for depth in IRESNET_DEPTHS:
        register(f"iresnet{depth}", iresnet_factory(depth), neck="e")
    register("mobilefacenet", mobilefacenet, neck="gdc")
    register("ghostfacenet", ghostfacenet, neck="gdc")
    for name, (class_name, preprocessing, extra_options) in APPLICATIONS.items():
        register(name, application_factory(class_name, preprocessing, extra_options),
                 neck="gdc")
