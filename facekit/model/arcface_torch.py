"""arcface_torch's backbones (insightface ``recognition/arcface_torch``) onto
facekit's: which network a state dict is, and its weights on facekit's layers.

facekit's ``iresnet*`` and ``mobilefacenet`` backbones keep the reference's
layers one to one (facekit_plugins.backbones), so every tensor has one place:

- a convolution's (out, in, kh, kw) weight is Keras' (kh, kw, in, out) kernel,
  a depthwise one's (channels, 1, kh, kw) Keras' (kh, kw, channels, 1);
- BatchNorm's weight, bias, running mean and variance are gamma, beta and the
  moving statistics; PReLU's per-channel weight is Keras' (1, 1, C) alpha;
- IResNet's ``fc`` reads the flattened (C, H, W) map and Keras' Dense the
  (H, W, C) one: its columns are reordered;
- the final ``features`` BatchNorm1d is the embedding BatchNorm, whose scale
  facekit fixes at 1 (as arcface_torch freezes it): a scale other than 1 is
  moved into the dense layer before it (w * (x - m) = (w x) - (w m)).
"""

from __future__ import annotations

import re

import numpy as np

from facekit.errors import FacekitError

# The inverse of facekit_plugins.backbones.IRESNET_DEPTHS (the core may not import plugins).
IRESNET_DEPTHS = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 34, (3, 4, 14, 3): 50,
                  (3, 13, 30, 3): 100, (6, 26, 60, 6): 200}


def network_of(state: dict[str, np.ndarray], source: str) -> dict:
    """The facekit network (train's option names) of an arcface_torch state dict."""
    if "conv1.weight" in state and "layer1.0.conv1.weight" in state:
        blocks = tuple(_count(state, rf"layer{stage}\.(\d+)\.conv1\.weight")
                       for stage in range(1, 5))
        if blocks not in IRESNET_DEPTHS:
            raise FacekitError(f"'{source}' is an IResNet with {blocks} blocks per stage, "
                               f"not one of arcface_torch's r18/r34/r50/r100/r200.")
        if state["conv1.weight"].shape[0] != 64:
            raise FacekitError(f"'{source}' is an IResNet {state['conv1.weight'].shape[0]} "
                               "channels wide; facekit imports the reference width, 64.")
        return {"backbone": f"iresnet{IRESNET_DEPTHS[blocks]}", "backbone_options": {},
                "neck": "e", "neck_options": {"use_bias": "fc.bias" in state},
                "embedding_size": int(state["fc.weight"].shape[0]), "image_size": 112,
                "dropout": 0.0, "embedding_bn": True}
    if "layers.0.layers.0.weight" in state and "conv_sep.layers.0.weight" in state:
        scale = int(state["layers.0.layers.0.weight"].shape[0]) // 64
        first = (1 if _grouped_stem(state) else
                 _count(state, r"layers\.1\.layers\.(\d+)\.layers\.0\.layers\.0\.weight"))
        blocks = [first] + [_count(state, rf"layers\.{index}\.layers\.(\d+)\.layers\.0\."
                                          r"layers\.0\.weight") for index in (3, 5, 7)]
        return {"backbone": "mobilefacenet",
                "backbone_options": {"scale": scale, "blocks": ",".join(map(str, blocks)),
                                     "features": int(state["conv_sep.layers.0.weight"].shape[0])},
                "neck": "gdc", "neck_options": {"use_bias": False},
                "embedding_size": int(state["features.layers.2.weight"].shape[0]),
                "image_size": 112, "dropout": 0.0, "embedding_bn": True}
    raise FacekitError(f"'{source}' is neither an arcface_torch IResNet nor a MobileFaceNet "
                       "state dict (no conv1/layer1 or layers/conv_sep weights).")


def _grouped_stem(state) -> bool:
    """Whether MobileFaceNet's second layer is its grouped ConvBlock (blocks[0] == 1)
    rather than a group of residual blocks."""
    return getattr(state.get("layers.1.layers.0.weight"), "ndim", 0) == 4


def _count(state, pattern: str) -> int:
    found = {int(m.group(1)) for key in state if (m := re.fullmatch(pattern, key))}
    return max(found) + 1 if found else 0


def load_state(model, state: dict[str, np.ndarray], network: dict, source: str) -> None:
    """Set the basic ``model`` (built for ``network``) to the weights of ``state``;
    every tensor must be used exactly once."""
    backbone, neck = model.get_layer("backbone"), model.get_layer("neck")
    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        if name not in state:
            raise FacekitError(f"'{source}' has no {name}, which this network needs.")
        used.add(name)
        return state[name]

    def bn(layer, prefix, scale=True):
        weights = [take(f"{prefix}.bias"), take(f"{prefix}.running_mean"),
                   take(f"{prefix}.running_var")]
        if scale:
            weights.insert(0, take(f"{prefix}.weight"))
        layer.set_weights(weights)
        used.add(f"{prefix}.num_batches_tracked")

    def conv(layer, name):
        weight = take(name)
        if type(layer).__name__ == "DepthwiseConv2D":
            layer.set_weights([weight.transpose(2, 3, 0, 1)])
        else:
            layer.set_weights([weight.transpose(2, 3, 1, 0)])

    def prelu(layer, name):
        layer.set_weights([take(name).reshape(1, 1, -1)])

    iresnet = network["backbone"].startswith("iresnet")
    (_iresnet if iresnet else _mobilefacenet)(backbone, neck, state, bn, conv, prelu)
    dense = neck.get_layer("dense")
    kernel = _dense_kernel(take("fc.weight" if iresnet else "features.layers.2.weight"), neck)
    bias = take("fc.bias") if dense.use_bias else None
    prefix = "features" if iresnet else "features.layers.3"
    gamma = take(f"{prefix}.weight")
    mean, variance = take(f"{prefix}.running_mean"), take(f"{prefix}.running_var")
    kernel, mean = kernel * gamma, mean * gamma  # the embedding BatchNorm's scale is 1
    dense.set_weights([kernel] + ([bias * gamma] if bias is not None else []))
    used.add(f"{prefix}.num_batches_tracked")
    model.get_layer("embedding").set_weights([take(f"{prefix}.bias"), mean, variance])
    left = sorted(set(state) - used)
    if left:
        raise FacekitError(f"'{source}' holds {len(left)} tensors this network has no place "
                           f"for (first: {left[0]}).")


def _dense_kernel(weight: np.ndarray, neck) -> np.ndarray:
    """PyTorch's Linear (out, in) over a (C, H, W) flattening -> Keras' (in, out) over
    the (H, W, C) one."""
    feature_shape = neck.input_shape[1:]
    out = weight.shape[0]
    if len(feature_shape) == 3 and weight.shape[1] == int(np.prod(feature_shape)):
        height, width, channels = feature_shape
        if neck.get_layer("flatten").input.shape[1:] == (height, width, channels):
            weight = weight.reshape(out, channels, height, width).transpose(0, 2, 3, 1)
    return weight.reshape(out, -1).T


def _iresnet(backbone, neck, state, bn, conv, prelu) -> None:
    conv(backbone.get_layer("stem_conv"), "conv1.weight")
    bn(backbone.get_layer("stem_bn"), "bn1")
    prelu(backbone.get_layer("stem_prelu"), "prelu.weight")
    for stage in range(1, 5):
        for block in range(_count(state, rf"layer{stage}\.(\d+)\.conv1\.weight")):
            torch, keras_name = f"layer{stage}.{block}", f"stage{stage}_block{block + 1}"
            for part in ("bn1", "bn2", "bn3"):
                bn(backbone.get_layer(f"{keras_name}_{part}"), f"{torch}.{part}")
            conv(backbone.get_layer(f"{keras_name}_conv1"), f"{torch}.conv1.weight")
            conv(backbone.get_layer(f"{keras_name}_conv2"), f"{torch}.conv2.weight")
            prelu(backbone.get_layer(f"{keras_name}_prelu"), f"{torch}.prelu.weight")
            if f"{torch}.downsample.0.weight" in state:
                conv(backbone.get_layer(f"{keras_name}_down_conv"),
                     f"{torch}.downsample.0.weight")
                bn(backbone.get_layer(f"{keras_name}_down_bn"), f"{torch}.downsample.1")
    bn(neck.get_layer("bn"), "bn2")


def _mobilefacenet(backbone, neck, state, bn, conv, prelu) -> None:
    def conv_block(keras_name, torch):  # ConvBlock: conv, BN, PReLU
        conv(backbone.get_layer(f"{keras_name}_conv"), f"{torch}.layers.0.weight")
        bn(backbone.get_layer(f"{keras_name}_bn"), f"{torch}.layers.1")
        prelu(backbone.get_layer(f"{keras_name}_prelu"), f"{torch}.layers.2.weight")

    def inverted(keras_name, torch):  # DepthWise: expand, depthwise, linear projection
        conv_block(f"{keras_name}_expand", f"{torch}.layers.0")
        conv_block(f"{keras_name}_dw", f"{torch}.layers.1")
        conv(backbone.get_layer(f"{keras_name}_project_conv"), f"{torch}.layers.2.layers.0.weight")
        bn(backbone.get_layer(f"{keras_name}_project_bn"), f"{torch}.layers.2.layers.1")

    def residuals(keras_name, torch):
        count = _count(state, rf"{re.escape(torch)}\.layers\.(\d+)\.layers\.0\.layers\.0\.weight")
        for block in range(count):
            inverted(f"{keras_name}_block{block + 1}", f"{torch}.layers.{block}")

    conv_block("stem", "layers.0")
    if _grouped_stem(state):
        conv_block("stem2", "layers.1")
    else:
        residuals("stage1", "layers.1")
    for stage, index in ((2, 2), (3, 4), (4, 6)):
        inverted(f"stage{stage}_down", f"layers.{index}")
        residuals(f"stage{stage}", f"layers.{index + 1}")
    conv_block("conv_sep", "conv_sep")
    conv(neck.get_layer("gdc_dw"), "features.layers.0.layers.0.weight")
    bn(neck.get_layer("gdc_bn"), "features.layers.0.layers.1")
