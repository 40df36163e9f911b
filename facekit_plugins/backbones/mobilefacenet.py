"""MobileFaceNet as arcface_torch builds it (``backbones/mobilefacenet.py``, ``mbf``
and ``mbf_large``).

Inverted residual blocks (1x1 expand -> 3x3 depthwise -> 1x1 linear projection,
PReLU after the first two) in four groups after a stride-2 stem; the expansion
widths (128, 256, 512) are fixed and ``scale`` multiplies the block widths
(64 and 128).  The map ends in a 1x1 convolution to 512 channels; the
reference's GDC output block is facekit's ``gdc`` neck plus the embedding
BatchNorm.
"""

from __future__ import annotations

import keras

from facekit_plugins.backbones.blocks import batchnorm, conv, depthwise, normalize, prelu

def mobilefacenet(input_shape, scale: int, blocks, features: int,
                  bn_momentum: float) -> keras.Model:
    """MobileFaceNet mapping [0, 255] pixels to a ``features``-channel map (7x7 at 112);
    ``blocks`` holds the block counts of its four stages."""
    narrow, wide = 64 * scale, 128 * scale
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = normalize()(inputs)
    x = _conv_block(x, narrow, 3, bn_momentum, strides=2, name="stem")
    if blocks[0] == 1:  # the reference's grouped 3x3 convolution, 64 groups
        x = _conv_block(x, narrow, 3, bn_momentum, groups=64, name="stem2")
    else:
        x = _residuals(x, blocks[0], 128, bn_momentum, name="stage1")
    # (output channels, expansion, blocks after the stride-2 block, their expansion)
    for stage, (filters, expansion, count, inner) in enumerate(
            [(narrow, 128, blocks[1], 128), (wide, 256, blocks[2], 256),
             (wide, 512, blocks[3], 256)], 2):
        x = _inverted(x, filters, expansion, 2, bn_momentum, name=f"stage{stage}_down")
        x = _residuals(x, count, inner, bn_momentum, name=f"stage{stage}")
    x = _conv_block(x, features, 1, bn_momentum, name="conv_sep")
    return keras.Model(inputs, x, name="mobilefacenet")


def _conv_block(x, filters, kernel, bn_momentum, name, strides=1, groups=1):
    """conv -> BN -> PReLU (the reference's ConvBlock)."""
    if groups == filters == x.shape[-1]:
        x = depthwise(x, kernel, strides=strides, name=f"{name}_conv")
    else:
        x = conv(x, filters, kernel, strides=strides, groups=groups, name=f"{name}_conv")
    x = batchnorm(x, bn_momentum, name=f"{name}_bn")
    return prelu(x, name=f"{name}_prelu")


def _inverted(x, filters, expansion, strides, bn_momentum, name):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear (the reference's DepthWise)."""
    y = _conv_block(x, expansion, 1, bn_momentum, name=f"{name}_expand")
    y = _conv_block(y, expansion, 3, bn_momentum, strides=strides, groups=expansion,
                    name=f"{name}_dw")
    y = conv(y, filters, 1, name=f"{name}_project_conv")
    return batchnorm(y, bn_momentum, name=f"{name}_project_bn")


def _residuals(x, count, expansion, bn_momentum, name):
    for block in range(1, count + 1):
        y = _inverted(x, x.shape[-1], expansion, 1, bn_momentum, name=f"{name}_block{block}")
        x = keras.layers.Add(name=f"{name}_block{block}_add")([x, y])
    return x
