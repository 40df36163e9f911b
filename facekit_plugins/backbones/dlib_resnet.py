"""dlib's face ResNet (``dnn_face_recognition_ex.cpp``, the network of
``dlib_face_recognition_resnet_model_v1.dat``) in Keras layers.

A 7x7 stride-2 convolution, BatchNorm, ReLU and a 3x3 stride-2 max pool; then
fourteen residual units of two 3x3 convolutions with BatchNorm (32, 64, 128,
256 and 256 channels, each wider stage starting at stride 2).  dlib pads a
stride-1 convolution by one pixel and a strided one not at all; a downsampling
unit's shortcut is a 2x2 average pool, and where the two branches differ in
size (more channels on one side, 3x3 against 4x4 pixels deeper down) dlib adds
them with zeros for the missing part, which ``PaddedAdd`` reproduces.  Pixels
enter as ``(x - mean) / 256`` with the mean of dlib's training faces.  Its
output block (global average pooling, a 128-d dense layer without bias) is
facekit's ``gap`` neck with ``use_bias=False``.

dlib trained BatchNorm and saved it as a fixed per-channel affine layer; the
weights reader (``facekit.model.dlib_file.load_dlib_weights``) sets each BatchNorm
to exactly that affine map (mean 0, variance ``1 - epsilon``).  Batch statistics would undo it,
so the imported model is built with ``fixed_bn=True``: ``FixedStatisticsBatchNorm``
normalizes with its stored statistics in training too (its scale and offset still
learn), as dlib fine-tunes its affine layers.  From scratch, BatchNorm is the usual.
"""

from __future__ import annotations

import keras
from keras import ops

from facekit.model.dlib_file import DLIB_MEAN_RGB, UNITS
from facekit_plugins.backbones.blocks import BN_EPSILON


@keras.saving.register_keras_serializable(package="facekit")
class FixedStatisticsBatchNorm(keras.layers.BatchNormalization):
    """BatchNormalization that always normalizes with its moving statistics, which
    therefore never change (training and facekit's BatchNorm recalibration alike);
    gamma and beta train as usual."""

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=False, mask=mask)


@keras.saving.register_keras_serializable(package="facekit")
class PaddedAdd(keras.layers.Layer):
    """The sum of two feature maps of different sizes, each zero-padded at the end
    of its height, width and channels to the larger one (dlib's ``add_prev``)."""

    def call(self, inputs):
        first, second = inputs
        shape = [max(a, b) for a, b in zip(first.shape[1:], second.shape[1:])]
        return self._pad(first, shape) + self._pad(second, shape)

    @staticmethod
    def _pad(x, shape):
        missing = [(0, 0)] + [(0, size - have) for size, have in zip(shape, x.shape[1:])]
        return ops.pad(x, missing) if any(after for _, after in missing) else x

    def compute_output_shape(self, input_shapes):
        first, second = input_shapes
        return (first[0], *[max(a, b) for a, b in zip(first[1:], second[1:])])


def dlib_resnet(input_shape, *, bn_momentum: float, fixed_bn: bool = False,
                mean_rgb=DLIB_MEAN_RGB, name: str = "dlib_resnet") -> keras.Model:
    """dlib's face ResNet mapping [0, 255] RGB pixels to its last feature map
    (2x2x256 for its 150x150 input).

    Args:
        input_shape: (height, width, 3); dlib's weights were trained at 150x150.
        bn_momentum: the BatchNorms' momentum when they learn statistics.
        fixed_bn: BatchNorm with fixed statistics (``FixedStatisticsBatchNorm``), for
            dlib's weights.
        mean_rgb: the per-channel mean subtracted before scaling by 1/256.

    Examples:
        >>> backbone = dlib_resnet((150, 150, 3), bn_momentum=0.9)
        >>> backbone.output_shape
        (None, 2, 2, 256)
    """
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Rescaling(1 / 256, offset=[-m / 256 for m in mean_rgb],
                               name="normalize")(inputs)
    x = keras.layers.Conv2D(32, 7, strides=2, name="stem_conv")(x)
    norm = FixedStatisticsBatchNorm if fixed_bn else keras.layers.BatchNormalization

    def batchnorm(x, name):
        return norm(momentum=bn_momentum, epsilon=BN_EPSILON, name=name)(x)

    x = batchnorm(x, "stem_bn")
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    for index, (filters, down) in enumerate(UNITS, 1):
        x = _unit(x, filters, down, batchnorm, name=f"unit{index}")
    return keras.Model(inputs, x, name=name)


def _unit(x, filters: int, down: bool, batchnorm, name: str):
    shortcut = keras.layers.AveragePooling2D(2, name=f"{name}_pool")(x) if down else x
    y = keras.layers.Conv2D(filters, 3, strides=2 if down else 1,
                            padding="valid" if down else "same", name=f"{name}_conv1")(x)
    y = batchnorm(y, f"{name}_bn1")
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv2")(y)
    y = batchnorm(y, f"{name}_bn2")
    y = PaddedAdd(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_relu2")(y)
