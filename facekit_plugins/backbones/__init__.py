"""Built-in backbones: the face-native ones (IResNet, MobileFaceNet, GhostFaceNet,
dlib's ResNet)
and ``keras.applications`` models without their top.

Registration stays light: each factory's signature declares its options and
defaults (stated here once), ``checks`` bound them when the run is planned, and
the module that builds the Keras model (``iresnet``, ``mobilefacenet``,
``ghostfacenet``, ``applications``) is imported when the factory is called.
"""

from __future__ import annotations

import inspect

from facekit import hookimpl
from facekit.declare import Check, positive

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


def application_factory(class_name, preprocessing, extra_options):
    """A factory whose signature lists the options users may set."""
    defaults = {"weights": "none", "bn_momentum": DEFAULT_BN_MOMENTUM, **extra_options}

    def factory(input_shape=(112, 112, 3), **options):
        from facekit_plugins.backbones.applications import build_application

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
        from facekit_plugins.backbones.iresnet import iresnet

        return iresnet(input_shape, IRESNET_DEPTHS[depth], width=width,
                       bn_momentum=bn_momentum, name=f"iresnet{depth}")

    factory.__doc__ = f"insightface's IResNet-{depth} (arcface_torch r{depth}); width scales it."
    return factory


def mobilefacenet_backbone(input_shape=(112, 112, 3), *, scale=2, blocks="1,4,6,2", features=512,
                  bn_momentum=DEFAULT_BN_MOMENTUM):
    """MobileFaceNet (arcface_torch mbf; mbf_large: scale=4, blocks=2,8,12,4)."""
    from facekit_plugins.backbones.mobilefacenet import mobilefacenet as build

    return build(input_shape, scale=scale, blocks=int_list(blocks), features=features,
                 bn_momentum=bn_momentum)


def ghostfacenet_backbone(input_shape=(112, 112, 3), *, width=1.3, strides=2,
                 bn_momentum=DEFAULT_BN_MOMENTUM):
    """GhostFaceNetV1 (GhostNet, PReLU); strides=1 for its S1 variant."""
    from facekit_plugins.backbones.ghostfacenet import ghostfacenet as build

    return build(input_shape, width=width, strides=strides, bn_momentum=bn_momentum)


def dlib_resnet_backbone(input_shape=(150, 150, 3), *, bn_momentum=DEFAULT_BN_MOMENTUM,
                         fixed_bn=False):
    """dlib's face ResNet-29 (150x150, 128-d with the gap neck); --init-from dlib gives it
    dlib's public-domain weights (and fixed_bn, which they need)."""
    from facekit_plugins.backbones.dlib_resnet import dlib_resnet

    return dlib_resnet(input_shape, bn_momentum=bn_momentum, fixed_bn=fixed_bn)


def int_list(text) -> list[int]:
    """``"1,4,6,2"`` (a command-line option) or a sequence -> [1, 4, 6, 2]."""
    parts = text.split(",") if isinstance(text, str) else text
    return [int(part) for part in parts]


def _four_counts(text) -> bool:
    try:
        counts = int_list(text)
    except (TypeError, ValueError):
        return False
    return len(counts) == 4 and all(count >= 1 for count in counts)


_MOMENTUM = Check(lambda value: 0 <= value < 1, "must be in [0, 1)")
_WIDTH = {"width": positive(), "bn_momentum": _MOMENTUM}
_ALPHA = {"alpha": positive(), "bn_momentum": _MOMENTUM}


@hookimpl
def facekit_register_backbones(register):
    for depth in IRESNET_DEPTHS:
        register(f"iresnet{depth}", iresnet_factory(depth), neck="e", checks=_WIDTH)
    register("mobilefacenet", mobilefacenet_backbone, neck="gdc", checks={
        "scale": positive(), "features": positive(), "bn_momentum": _MOMENTUM,
        "blocks": Check(_four_counts, "must be four whole numbers of at least 1, e.g. 1,4,6,2")})
    register("ghostfacenet", ghostfacenet_backbone, neck="gdc", checks={
        **_WIDTH, "strides": Check(lambda value: value in (1, 2), "must be 1 or 2")})
    register("dlib-resnet", dlib_resnet_backbone, neck="gap", checks={"bn_momentum": _MOMENTUM})
    for name, (class_name, preprocessing, extra_options) in APPLICATIONS.items():
        checks = {key: check for key, check in _ALPHA.items()
                  if key in extra_options or key == "bn_momentum"}
        register(name, application_factory(class_name, preprocessing, extra_options),
                 neck="gdc", checks=checks)
