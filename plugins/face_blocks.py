"""Building blocks shared by the face-native backbones (Keras 3 layers only).

The references are PyTorch (insightface's arcface_torch) and tf.keras
(GhostFaceNets); the blocks keep their layer order, padding and BatchNorm
settings so that parameter counts match and weights could be ported.
"""

from __future__ import annotations

import keras

from facekit.errors import FacekitError
from facekit_plugins.keras_layers import GroupConv2D

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


def int_list(text, name: str) -> list[int]:
    """``"1,4,6,2"`` (a command-line option) or a sequence -> [1, 4, 6, 2]."""
    if isinstance(text, str):
        try:
            return [int(part) for part in text.split(",")]
        except ValueError:
            raise FacekitError(f"The backbone option {name} takes whole numbers separated by commas, "
                             f"got '{text}'") from None
    return [int(part) for part in text]
