"""GhostFaceNetV1 (Alansari et al., IEEE Access 2023; ``HamadYA/GhostFaceNets``).

GhostNet V1 at width 1.3: ghost modules (a 1x1 convolution makes half the
channels, a cheap 3x3 depthwise convolution the other half) in 16 ghost
bottlenecks, some with squeeze-and-excitation, every ReLU replaced by a
per-channel PReLU as the GhostFaceNets training scripts do, and a final 1x1
convolution to ``round(512 * width)`` channels.  ``strides`` is the stem's
stride: 2 (the reference default, "S2": a 4x4 map at 112x112) or 1 ("S1", 7x7).
The reference's output block is facekit's ``gdc`` neck plus the embedding
BatchNorm.
"""

from __future__ import annotations

import keras

from facekit_plugins.backbones.blocks import batchnorm, normalize, prelu

# GhostNet's table 1 as GhostFaceNets builds it (its last expansion is 512, not 960):
# (depthwise kernel, expansion, output, squeeze-excite ratio, stride)
BOTTLENECKS = (
    (3, 16, 16, 0, 1), (3, 48, 24, 0, 2), (3, 72, 24, 0, 1), (5, 72, 40, 0.25, 2),
    (5, 120, 40, 0.25, 1), (3, 240, 80, 0, 2), (3, 200, 80, 0, 1), (3, 184, 80, 0, 1),
    (3, 184, 80, 0, 1), (3, 480, 112, 0.25, 1), (3, 672, 112, 0.25, 1),
    (5, 672, 160, 0.25, 2), (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1),
    (5, 960, 160, 0, 1), (5, 512, 160, 0.25, 1),
)
LAST_FILTERS = 512
# GhostNet initializes convolutions with variance scaling 2.0, fan out, truncated normal.
KERNEL_INIT = "he_normal"


def divisible(value: float, divisor: int = 4) -> int:
    """``value`` rounded to a multiple of ``divisor``, never more than 10% below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def ghostfacenet(input_shape, width: float, strides: int, bn_momentum: float) -> keras.Model:
    """GhostFaceNetV1 mapping [0, 255] pixels to its last feature map."""
    counter = iter(range(1, 1000))

    def unique(kind: str) -> str:
        return f"{kind}_{next(counter)}"

    def bn(x):
        return batchnorm(x, bn_momentum, name=unique("bn"))

    def conv1x1(x, filters, use_bias=False):
        return keras.layers.Conv2D(filters, 1, use_bias=use_bias, kernel_initializer=KERNEL_INIT,
                                   name=unique("conv"))(x)

    def dw(x, kernel, stride=1):
        return keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False,
                                            depthwise_initializer=KERNEL_INIT,
                                            name=unique("dw"))(x)

    def ghost_module(x, filters, activate):
        primary = bn(conv1x1(x, filters // 2))
        if activate:
            primary = prelu(primary, name=unique("prelu"))
        cheap = bn(dw(primary, 3))
        if activate:
            cheap = prelu(cheap, name=unique("prelu"))
        return keras.layers.Concatenate(name=unique("concat"))([primary, cheap])

    def squeeze_excite(x, ratio):
        channels = x.shape[-1]
        s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=unique("se_pool"))(x)
        s = conv1x1(s, divisible(channels * ratio), use_bias=True)
        s = prelu(s, name=unique("prelu"))
        s = conv1x1(s, channels, use_bias=True)
        s = keras.layers.Activation("hard_sigmoid", name=unique("se_gate"))(s)
        return keras.layers.Multiply(name=unique("se_scale"))([x, s])

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = normalize()(inputs)
    x = keras.layers.Conv2D(divisible(16 * width), 3, strides=strides, padding="same",
                            use_bias=False, kernel_initializer=KERNEL_INIT, name="stem_conv")(x)
    x = prelu(bn(x), name="stem_prelu")
    for kernel, expansion, filters, se_ratio, stride in BOTTLENECKS:
        filters, expansion = divisible(filters * width), divisible(expansion * width)
        y = ghost_module(x, expansion, activate=True)
        if stride > 1:
            y = bn(dw(y, kernel, stride))
        if se_ratio:
            y = squeeze_excite(y, se_ratio)
        y = ghost_module(y, filters, activate=False)
        shortcut = x
        if x.shape[-1] != filters or stride != 1:
            shortcut = conv1x1(bn(dw(x, kernel, stride)), filters)
            shortcut = bn(shortcut)
        x = keras.layers.Add(name=unique("add"))([shortcut, y])
    x = bn(conv1x1(x, divisible(LAST_FILTERS * width)))
    return keras.Model(inputs, prelu(x, name="last_prelu"), name="ghostfacenet")
