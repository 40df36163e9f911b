"""Building blocks shared by the backbones (Keras 3 layers only): the input
normalizations, PyTorch-padded convolutions, and ``GroupConv2D``.

The references are PyTorch (insightface's arcface_torch) and tf.keras
(GhostFaceNets); the blocks keep their layer order, padding and BatchNorm
settings so that parameter counts match and weights could be ported.
"""

from __future__ import annotations

import keras
from keras import ops

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
# PyTorch's BatchNorm epsilon (its momentum 0.1 is the backbones' default
# bn_momentum 0.9 in Keras terms).
BN_EPSILON = 1e-5
# arcface_torch initializes convolutions with Kaiming normal (fan out).
KERNEL_INIT = "he_normal"


def normalize(name: str = "normalize") -> keras.layers.Layer:
    """[0, 255] pixels -> [-1, 1], the (x - 127.5) / 127.5 of every reference."""
    return keras.layers.Rescaling(1 / 127.5, offset=-1.0, name=name)


def batchnorm(x, momentum: float, name: str, epsilon: float = BN_EPSILON):
    return keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon, name=name)(x)


def prelu(x, name: str):
    """Per-channel PReLU starting at 0.25, as torch.nn.PReLU(channels)."""
    return keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25),
                              shared_axes=[1, 2], name=name)(x)


def conv(x, filters: int, kernel: int, name: str, strides: int = 1, groups: int = 1,
         use_bias: bool = False):
    """A convolution padded like PyTorch's ``padding=kernel // 2`` (symmetric, also at
    stride 2, where Keras's "same" would pad one side only); a grouped one is
    computed as a depthwise convolution (``GroupConv2D``), fast on a CPU too."""
    x, padding = _torch_padding(x, kernel, strides, name)
    layer = GroupConv2D if groups > 1 else keras.layers.Conv2D
    return layer(filters, kernel, strides=strides, padding=padding, groups=groups,
                 use_bias=use_bias, kernel_initializer=KERNEL_INIT, name=name)(x)


def depthwise(x, kernel: int, name: str, strides: int = 1):
    """A depthwise convolution padded like PyTorch's ``padding=kernel // 2``."""
    x, padding = _torch_padding(x, kernel, strides, name)
    return keras.layers.DepthwiseConv2D(kernel, strides=strides, padding=padding,
                                        use_bias=False, depthwise_initializer=KERNEL_INIT,
                                        name=name)(x)


def _torch_padding(x, kernel: int, strides: int, name: str):
    """PyTorch's symmetric ``padding=kernel // 2``: explicit zeros before a strided
    convolution, Keras's "same" (identical there) at stride 1."""
    pad = kernel // 2
    if pad and strides > 1:
        return keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x), "valid"
    return x, "same" if pad else "valid"


@keras.saving.register_keras_serializable(package="facekit")
class ImagePreprocessing(keras.layers.Layer):
    """Map raw pixels in [0, 255] to what a backbone's weights expect.

    Modes follow ``keras.applications.imagenet_utils.preprocess_input``:
    ``tf`` scales to [-1, 1], ``caffe`` converts RGB to BGR and subtracts the
    ImageNet mean, ``torch`` scales to [0, 1] and standardizes per channel.
    Living inside the model, it travels with every saved or exported model.
    """

    MODES = ("tf", "caffe", "torch")

    def __init__(self, mode="tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_MEAN_BGR, x.dtype)
        mean = ops.convert_to_tensor(_TORCH_MEAN, x.dtype)
        std = ops.convert_to_tensor(_TORCH_STD, x.dtype)
        return (x / 255.0 - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="facekit")
class GroupConv2D(keras.layers.Conv2D):
    """``Conv2D(groups=G)`` computed as a depthwise convolution and a sum per group.

    Same kernel, options and output as the Keras layer, so weights move either
    way; only the computation differs.  TensorFlow's CPU kernel for grouped
    convolutions is about 700 times slower than a depthwise one on
    MobileFaceNet's stem (docs/models.md); this keeps a model's speed the same
    on a CPU and a GPU.  A group of ``k`` input and ``m`` output channels is a
    depthwise convolution with ``m`` outputs per input channel whose ``k``
    results per output are added up: the same ``kh * kw * k * m`` weights.
    """

    def convolution_op(self, inputs, kernel):
        if self.groups == 1:
            return super().convolution_op(inputs, kernel)
        height, width, per_group, filters = kernel.shape
        outputs_per_group = filters // self.groups
        # Conv2D's kernel (kh, kw, k, G*m) -> depthwise (kh, kw, G*k, m): input channel g*k + i.
        kernel = ops.reshape(kernel, (height, width, per_group, self.groups, outputs_per_group))
        kernel = ops.reshape(ops.transpose(kernel, (0, 1, 3, 2, 4)),
                             (height, width, self.groups * per_group, outputs_per_group))
        x = ops.depthwise_conv(inputs, kernel, strides=self.strides, padding=self.padding,
                               data_format=self.data_format, dilation_rate=self.dilation_rate)
        # Depthwise output channel (g*k + i)*m + o  ->  sum over i  ->  channel g*m + o.
        channels_last = self.data_format == "channels_last"
        if not channels_last:
            x = ops.moveaxis(x, 1, -1)
        shape = ops.shape(x)
        x = ops.reshape(x, (*shape[:-1], self.groups, per_group, outputs_per_group))
        x = ops.reshape(ops.sum(x, axis=-2), (*shape[:-1], filters))
        return x if channels_last else ops.moveaxis(x, -1, 1)
