"""IResNet, insightface's face ResNet (arcface_torch ``backbones/iresnet.py``).

Improved residual blocks BN -> conv3x3 -> BN -> PReLU -> conv3x3 (stride) -> BN,
added to the input (through a 1x1 convolution and BN where the shape changes);
a 3x3 stride-1 stem with PReLU; four stages of 64, 128, 256 and 512 channels,
each starting at stride 2, so a 112x112 face ends as a 7x7x512 map.  The
reference's output block (BN -> dropout -> flatten -> dense -> BN) is facekit's
``e`` neck plus the embedding BatchNorm.
"""

from __future__ import annotations

import keras

from facekit_plugins.backbones.blocks import batchnorm, conv, normalize, prelu

STAGE_FILTERS = (64, 128, 256, 512)


def iresnet(input_shape, blocks, *, width: float, bn_momentum: float,
            name: str = "iresnet") -> keras.Model:
    """An IResNet with ``blocks`` residual blocks in each of its four stages, mapping
    [0, 255] pixels to its last feature map.

    ``width`` scales every stage's channels (1.0 is the reference; smaller widths
    are for tests and quick experiments).
    """
    filters = [max(1, round(f * width)) for f in STAGE_FILTERS]
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = normalize()(inputs)
    x = conv(x, filters[0], 3, name="stem_conv")
    x = batchnorm(x, bn_momentum, name="stem_bn")
    x = prelu(x, name="stem_prelu")
    for stage, (count, channels) in enumerate(zip(blocks, filters), 1):
        for block in range(1, count + 1):
            x = _block(x, channels, 2 if block == 1 else 1, bn_momentum,
                       name=f"stage{stage}_block{block}")
    return keras.Model(inputs, x, name=name)


def _block(x, filters: int, strides: int, bn_momentum: float, name: str):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv(x, filters, 1, strides=strides, name=f"{name}_down_conv")
        shortcut = batchnorm(shortcut, bn_momentum, name=f"{name}_down_bn")
    x = batchnorm(x, bn_momentum, name=f"{name}_bn1")
    x = conv(x, filters, 3, name=f"{name}_conv1")
    x = batchnorm(x, bn_momentum, name=f"{name}_bn2")
    x = prelu(x, name=f"{name}_prelu")
    x = conv(x, filters, 3, strides=strides, name=f"{name}_conv2")
    x = batchnorm(x, bn_momentum, name=f"{name}_bn3")
    return keras.layers.Add(name=f"{name}_add")([shortcut, x])
