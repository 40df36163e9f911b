"""The necks: from a backbone's feature map to the embedding (Keras 3 layers).

Each builder returns a model named ``neck`` whose output is the embedding
before the embedding BatchNorm that facekit adds after it (on by default, as
insightface's output blocks end; ``--no-embedding-bn`` leaves it out).  The
letters follow insightface's ``fc_type`` (``E``, ``F``, ``GDC``, ``GNAP``) and
Keras_insightface's ``output_layer``.  The options and their defaults are
declared once, by the factories in ``facekit_plugins.necks``.
"""

from __future__ import annotations

import keras
from keras import ops

from facekit_plugins.backbones.blocks import BN_EPSILON

NECK = "neck"


def _model(feature_shape, build) -> keras.Model:
    inputs = keras.Input(shape=tuple(feature_shape), name="features")
    return keras.Model(inputs, build(inputs), name=NECK)


def _dropout(x, rate):
    return keras.layers.Dropout(rate, name="dropout")(x) if rate else x


def _dense(x, units, use_bias, name="dense"):
    return keras.layers.Dense(units, use_bias=use_bias, kernel_initializer="glorot_normal",
                              name=name)(x)


def _bn(x, momentum, name, scale=True):
    return keras.layers.BatchNormalization(momentum=momentum, epsilon=BN_EPSILON, scale=scale,
                                           name=name)(x)


def gap(feature_shape, embedding_size, dropout, use_bias) -> keras.Model:
    def build(x):
        x = keras.layers.GlobalAveragePooling2D(name="pooling")(x)
        return _dense(_dropout(x, dropout), embedding_size, use_bias)
    return _model(feature_shape, build)


def flatten(feature_shape, embedding_size, dropout, use_bias) -> keras.Model:
    def build(x):
        x = keras.layers.Flatten(name="pooling")(x)
        return _dense(_dropout(x, dropout), embedding_size, use_bias)
    return _model(feature_shape, build)


def gdc(feature_shape, embedding_size, dropout, use_bias, pointwise, bn_momentum) -> keras.Model:
    def build(x):
        if pointwise:  # Keras_insightface's add_pointwise_conv, for wide backbones
            x = keras.layers.Conv2D(pointwise, 1, use_bias=False, name="pointwise_conv")(x)
            x = _bn(x, bn_momentum, "pointwise_bn")
            x = keras.layers.PReLU(shared_axes=[1, 2], name="pointwise_prelu")(x)
        x = keras.layers.DepthwiseConv2D(tuple(x.shape[1:3]), use_bias=False,
                                         name="gdc_dw")(x)
        x = _bn(x, bn_momentum, "gdc_bn")
        x = keras.layers.Flatten(name="flatten")(_dropout(x, dropout))
        return _dense(x, embedding_size, use_bias)
    return _model(feature_shape, build)


def e(feature_shape, embedding_size, dropout, use_bias, bn_momentum) -> keras.Model:
    def build(x):
        x = _bn(x, bn_momentum, "bn")
        x = keras.layers.Flatten(name="flatten")(_dropout(x, dropout))
        return _dense(x, embedding_size, use_bias)
    return _model(feature_shape, build)


def f(feature_shape, embedding_size, dropout, use_bias) -> keras.Model:
    def build(x):
        x = keras.layers.Flatten(name="flatten")(_dropout(x, dropout))
        return _dense(x, embedding_size, use_bias)
    return _model(feature_shape, build)


def gnap(feature_shape, embedding_size, dropout, use_bias, bn_momentum) -> keras.Model:
    def build(x):
        if embedding_size > x.shape[-1]:  # widen first, as the reference does
            x = keras.layers.Conv2D(embedding_size, 1, use_bias=False, name="widen_conv")(x)
            x = _bn(x, bn_momentum, "widen_bn")
            x = keras.layers.PReLU(shared_axes=[1, 2], name="widen_prelu")(x)
        x = _bn(x, bn_momentum, "bn", scale=False)
        x = NormAwarePooling(name="norm_aware_pooling")(x)
        if embedding_size == x.shape[-1]:
            return _dropout(x, dropout)
        x = _bn(x, bn_momentum, "pooled_bn", scale=False)
        return _dense(_dropout(x, dropout), embedding_size, use_bias)
    return _model(feature_shape, build)


@keras.saving.register_keras_serializable(package="facekit")
class NormAwarePooling(keras.layers.Layer):
    """Global norm-aware pooling (GNAP, MobiFace): each position is weighted by the
    image's mean feature norm over its own norm, then averaged.

    insightface's MXNet version takes the mean over the whole batch; here it is
    per image, so an embedding does not depend on the other images of its batch.
    """

    def call(self, inputs):
        norms = ops.sqrt(ops.sum(ops.square(inputs), axis=-1, keepdims=True) + 1e-12)
        mean = ops.mean(norms, axis=(1, 2), keepdims=True)
        return ops.mean(inputs * (mean / norms), axis=(1, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])
