"""Built-in necks: between the backbone's feature map and the embedding.

Every factory takes the feature-map shape, the run's ``--embedding-size`` and
``--dropout`` (facekit passes them); its keyword arguments are the options
``--neck-opt`` sets and ``facekit list-plugins`` shows, their defaults stated here
once.  The Keras models are built by ``facekit_plugins.necks.layers``.
"""

from __future__ import annotations

from facekit import hookimpl
from facekit.declare import Check, at_least
from facekit_plugins.backbones import DEFAULT_BN_MOMENTUM


def _build(name, *args, **options):
    from facekit_plugins.necks import layers

    return getattr(layers, name)(*args, **options)


def gap(feature_shape, embedding_size, dropout, *, use_bias=True):
    """Global average pooling -> dropout -> dense (the keras.applications way)."""
    return _build("gap", feature_shape, embedding_size, dropout, use_bias=use_bias)


def flatten(feature_shape, embedding_size, dropout, *, use_bias=True):
    """Flatten -> dropout -> dense: every position its own weights."""
    return _build("flatten", feature_shape, embedding_size, dropout, use_bias=use_bias)


def gdc(feature_shape, embedding_size, dropout, *, use_bias=False, pointwise=0,
        bn_momentum=DEFAULT_BN_MOMENTUM):
    """Global depthwise convolution -> BN -> dropout -> dense (MobileFaceNet's output).

    ``pointwise=N`` first maps a wide backbone's channels to N (1x1 conv, BN, PReLU).
    """
    return _build("gdc", feature_shape, embedding_size, dropout, use_bias=use_bias,
                  pointwise=pointwise, bn_momentum=bn_momentum)


def e(feature_shape, embedding_size, dropout, *, use_bias=True,
      bn_momentum=DEFAULT_BN_MOMENTUM):
    """BN -> dropout -> flatten -> dense (insightface's "E", IResNet's output block)."""
    return _build("e", feature_shape, embedding_size, dropout, use_bias=use_bias,
                  bn_momentum=bn_momentum)


def f(feature_shape, embedding_size, dropout, *, use_bias=True):
    """Dropout -> flatten -> dense (Keras_insightface's "F": E without its first BN)."""
    return _build("f", feature_shape, embedding_size, dropout, use_bias=use_bias)


def gnap(feature_shape, embedding_size, dropout, *, use_bias=True,
         bn_momentum=DEFAULT_BN_MOMENTUM):
    """BN -> global norm-aware pooling -> BN -> dense (MobiFace's output block)."""
    return _build("gnap", feature_shape, embedding_size, dropout, use_bias=use_bias,
                  bn_momentum=bn_momentum)


NECKS = (gap, flatten, gdc, e, f, gnap)
_MOMENTUM = Check(lambda value: 0 <= value < 1, "must be in [0, 1)")


@hookimpl
def facekit_register_necks(register):
    for factory in NECKS:
        checks = {"bn_momentum": _MOMENTUM} if "bn_momentum" in factory.__kwdefaults__ else {}
        if factory is gdc:
            checks["pointwise"] = at_least(0)
        register(factory.__name__, factory, checks=checks)
