"""dlib's face descriptor network (``dlib_face_recognition_resnet_model_v1.dat``),
read without dlib and without trusting the file.

The file is dlib's own serialization (``dlib/serialize.h`` and each DNN layer's
``serialize``) of the ResNet in dlib's ``dnn_face_recognition_ex.cpp``: a 7x7
stride-2 stem, a 3x3 max pool, fourteen residual units (32, 64, 128, 256 and
256 channels) and a 128-d fully connected layer without bias.  dlib writes a
network from the outside in: every wrapper's version first (loss, layers,
tags, skips, top to bottom), then each layer's details from the input up,
each followed by its (empty) cached tensors.

The reader walks exactly that network and refuses anything else in one
sentence: integers are dlib's length-prefixed little-endian form, floats a
mantissa and exponent, tensors four sizes and raw little-endian float32, and
no size is believed before the bytes behind it are there, so memory stays
proportional to the file.  What it returns is plain NumPy arrays, in the order
the ``dlib-resnet`` backbone (facekit_plugins.backbones.dlib_resnet) creates its
layers; ``load_dlib_weights`` puts them there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facekit.errors import FacekitError

# The network, top to bottom, as dlib's templates expand it: "con N K S" (filters,
# kernel, stride), "affine", "relu", "max_pool", "avg_pool", "avg_pool_everything",
# "add_prev", "fc N", "tag", "skip".  Tags and skips have no details of their own.
_BLOCK = "affine|con {n} 3 1|relu|affine|con {n} 3 {s}"  # dlib's block<N, affine, s>


def _unit(filters: int, down: bool) -> list[str]:
    """One residual unit (dlib's ``ares``, or ``ares_down`` when ``down``), top down."""
    block = _BLOCK.format(n=filters, s=2 if down else 1).split("|")
    if down:
        return ["relu", "add_prev", "avg_pool", "skip", "tag", *block, "tag"]
    return ["relu", "add_prev", *block, "tag"]


# dlib's input_rgb_image_sized averages (the file stores them too).
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)
# Residual units from the input up: (channels, downsampling), as dlib's alevel4..alevel0.
UNITS = ((32, False),) * 3 + ((64, True),) + ((64, False),) * 3 \
    + ((128, True),) + ((128, False),) * 2 + ((256, True),) + ((256, False),) * 2 \
    + ((256, True),)
STEM_FILTERS, STEM_KERNEL, EMBEDDING_SIZE, INPUT_SIZE = 32, 7, 128, 150


def network() -> list[str]:
    """The network's wrappers from its top (the fc layer) to the stem's convolution."""
    top_down = [f"fc {EMBEDDING_SIZE}", "avg_pool_everything"]
    for filters, down in reversed(UNITS):
        top_down += _unit(filters, down)
    return top_down + ["max_pool", "relu", "affine", f"con {STEM_FILTERS} {STEM_KERNEL} 2"]


@dataclass
class DlibNetwork:
    """The weights of dlib's face descriptor network, from the input up.

    ``convolutions`` are Keras kernels (height, width, in, out) with their biases,
    ``affines`` dlib's per-channel (gamma, beta) that replace BatchNorm after
    training, ``dense`` the (256, 128) fc matrix, ``mean_rgb`` the input layer's
    averages (pixels enter as (x - mean) / 256).
    """

    mean_rgb: tuple[float, float, float]
    convolutions: list[tuple[np.ndarray, np.ndarray | None]] = field(default_factory=list)
    affines: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    dense: np.ndarray | None = None


class _Bytes:
    """dlib's primitive encodings over a bytes object, each read checked."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, count: int) -> bytes:
        if count < 0 or self.pos + count > len(self.data):
            raise ValueError(f"it ends {self.pos + count - len(self.data)} bytes early")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def int(self) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if control & 0x70 or not 1 <= size <= 8:
            raise ValueError(f"byte {self.pos - 1} is not one of dlib's integers")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def string(self, limit: int = 64) -> str:
        length = self.int()
        if not 0 <= length <= limit:
            raise ValueError(f"a name at byte {self.pos} claims {length} characters")
        return self.take(length).decode("ascii", "replace")

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent >= 32000:  # dlib's inf, -inf and NaN
            raise ValueError(f"a parameter at byte {self.pos} is not finite")
        return math.ldexp(mantissa, exponent)

    def bool(self) -> bool:
        value = self.take(1)
        if value not in (b"0", b"1"):
            raise ValueError(f"byte {self.pos - 1} is not one of dlib's booleans")
        return value == b"1"

    def tensor(self) -> np.ndarray:
        """A tensor (version 2): four sizes and raw little-endian float32."""
        self.expect_int({2}, "a tensor's version")
        shape = tuple(self.int() for _ in range(4))
        if min(shape) < 0:
            raise ValueError(f"a tensor has a negative size {shape}")
        count = math.prod(shape)
        values = np.frombuffer(self.take(4 * count), "<f4").astype("float32")
        if not np.isfinite(values).all():
            raise ValueError(f"a tensor ending at byte {self.pos} holds NaN or infinity")
        return values.reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        """An alias tensor (version 1): a view's four sizes, no data."""
        self.expect_int({1}, "an alias tensor's version")
        return tuple(self.int() for _ in range(4))

    def expect_int(self, allowed, what: str) -> int:
        value = self.int()
        if value not in allowed:
            raise ValueError(f"{what} is {value}, not {sorted(allowed)}")
        return value

    def expect_name(self, allowed, what: str) -> str:
        name = self.string()
        if name not in allowed:
            raise ValueError(f"found {name!r} where dlib writes {what}")
        return name


def read_dlib_network(path) -> DlibNetwork:
    """Read ``path`` as dlib_face_recognition_resnet_model_v1.dat; a file that is not
    that network, damaged or cut short raises one FacekitError naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise FacekitError(f"Cannot read '{path}': {error.strerror or error}.") from None
    try:
        return _parse(_Bytes(data))
    except ValueError as error:
        raise FacekitError(f"'{path}' is not dlib's face descriptor network "
                           f"(dlib_face_recognition_resnet_model_v1.dat): {error}.") from None


def _parse(stream: _Bytes) -> DlibNetwork:
    stream.expect_int({1}, "the loss layer's version")
    if stream.expect_name({"loss_metric_", "loss_metric_2"}, "a metric loss") == "loss_metric_2":
        stream.float(), stream.float()  # margin and distance threshold: training only
    wrappers = network()
    versions = []
    for index, kind in enumerate(wrappers):
        if kind in ("tag", "skip"):
            versions.append(stream.expect_int({1}, f"a {kind}'s version"))
        else:  # the stem's layer sits on the input and has its own versions
            bottom = index == len(wrappers) - 1
            versions.append(stream.expect_int({2, 3} if bottom else {1, 2},
                                              f"layer {index}'s version"))
    stream.expect_name({"input_rgb_image_sized"}, "its 150x150 RGB input")
    mean = tuple(stream.float() for _ in range(3))
    if (stream.int(), stream.int()) != (INPUT_SIZE, INPUT_SIZE):
        raise ValueError("its input is not 150x150")
    net = DlibNetwork(mean_rgb=mean)
    for index in reversed(range(len(wrappers))):
        kind = wrappers[index]
        if kind in ("tag", "skip"):
            continue
        _layer(stream, kind, net)
        _trailer(stream, versions[index], bottom=index == len(wrappers) - 1)
    if stream.pos != len(stream.data):
        raise ValueError(f"{len(stream.data) - stream.pos} bytes follow the network")
    return net


def _trailer(stream: _Bytes, version: int, bottom: bool) -> None:
    """What dlib's add_layer writes after a layer: three flags and its cached
    tensors (empty in a saved model, but read and checked all the same)."""
    for _ in range(3):
        stream.bool()
    for _ in range(3 if bottom or version == 2 else 2):
        stream.tensor()
    if bottom and version == 3:
        stream.expect_int({1}, "the sample expansion factor")


def _layer(stream: _Bytes, kind: str, net: DlibNetwork) -> None:
    name, *sizes = kind.split()
    if name == "con":
        _convolution(stream, *map(int, sizes), net)
    elif name == "affine":
        _affine(stream, net)
    elif name == "fc":
        _fc(stream, int(sizes[0]), net)
    elif name == "relu":
        if stream.expect_name({"relu_", "relu_2"}, "a relu") == "relu_2" and stream.bool():
            raise ValueError("a relu is disabled")
    elif name == "add_prev":
        stream.expect_name({"add_prev_"}, "a residual addition")
    elif name in ("max_pool", "avg_pool", "avg_pool_everything"):
        _pool(stream, name, kind)
    else:  # pragma: no cover - network() names only the kinds above
        raise AssertionError(kind)


def _convolution(stream: _Bytes, filters: int, kernel: int, stride: int,
                 net: DlibNetwork) -> None:
    version = stream.expect_name({"con_4", "con_5", "con_6"}, "a convolution")
    params = stream.tensor()
    found = [stream.int() for _ in range(7)]  # filters, rows, cols, strides, paddings
    padding = 0 if stride != 1 else kernel // 2  # dlib's default for this network
    expected = [filters, kernel, kernel, stride, stride, padding, padding]
    if found != expected:
        raise ValueError(f"a convolution is {found}, not {expected} "
                         "(filters, size, strides, paddings)")
    weights_shape, bias_shape = stream.alias(), stream.alias()
    for _ in range(4):
        stream.float()  # learning-rate and weight-decay multipliers
    use_bias = True
    if version in ("con_5", "con_6"):
        use_bias = stream.bool()
    if version == "con_6" and stream.bool():
        raise ValueError("a convolution has a fused relu")
    out_channels, in_channels, rows, cols = weights_shape
    weight_count = math.prod(weights_shape)
    expected_params = weight_count + (filters if use_bias else 0)
    if (out_channels, rows, cols) != (filters, kernel, kernel) or params.size != expected_params \
            or (use_bias and bias_shape != (1, filters, 1, 1)):
        raise ValueError(f"a convolution's parameters do not fit its {weights_shape} filters")
    flat = params.reshape(-1)
    kernel_array = flat[:weight_count].reshape(weights_shape).transpose(2, 3, 1, 0)
    bias = flat[weight_count:].copy() if use_bias else None
    previous = net.convolutions[-1][0].shape[3] if net.convolutions else 3
    if in_channels != previous:
        raise ValueError(f"a convolution takes {in_channels} channels where the network "
                         f"has {previous}")
    net.convolutions.append((np.ascontiguousarray(kernel_array), bias))


def _affine(stream: _Bytes, net: DlibNetwork) -> None:
    version = stream.expect_name({"affine_", "affine_2"}, "an affine (frozen BatchNorm) layer")
    params = stream.tensor()
    gamma_shape, beta_shape = stream.alias(), stream.alias()
    channels = net.convolutions[-1][0].shape[3] if net.convolutions else 0
    if stream.int() != 0:  # dlib's CONV_MODE: one gamma and beta per channel
        raise ValueError("an affine layer is not per channel")
    if version == "affine_2" and stream.bool():
        raise ValueError("an affine layer is disabled")
    if gamma_shape != (1, channels, 1, 1) or beta_shape != gamma_shape \
            or params.size != 2 * channels:
        raise ValueError(f"an affine layer of shape {gamma_shape} follows {channels} channels")
    flat = params.reshape(-1)
    net.affines.append((flat[:channels].copy(), flat[channels:].copy()))


def _fc(stream: _Bytes, outputs: int, net: DlibNetwork) -> None:
    version = stream.expect_name({"fc_2", "fc_3"}, "a fully connected layer")
    found_outputs, inputs = stream.int(), stream.int()
    params = stream.tensor()
    weights_shape, _ = stream.alias(), stream.alias()
    if stream.int() != 1:  # dlib's FC_NO_BIAS
        raise ValueError("the fully connected layer has a bias")
    for _ in range(4):
        stream.float()
    if version == "fc_3":
        stream.bool()
    channels = net.convolutions[-1][0].shape[3]
    if (found_outputs, inputs) != (outputs, channels) or params.size != inputs * outputs \
            or weights_shape != (inputs, outputs, 1, 1):
        raise ValueError(f"the fully connected layer is {inputs}->{found_outputs}, "
                         f"not {channels}->{outputs}")
    net.dense = params.reshape(inputs, outputs).copy()


def _pool(stream: _Bytes, name: str, kind: str) -> None:
    stream.expect_name({f"{'max' if name == 'max_pool' else 'avg'}_pool_2"}, f"a {name}")
    found = [stream.int() for _ in range(6)]
    expected = {"max_pool": [3, 3, 2, 2, 0, 0], "avg_pool": [2, 2, 2, 2, 0, 0],
                "avg_pool_everything": [0, 0, 1, 1, 0, 0]}[name]
    if found != expected:
        raise ValueError(f"a {kind} is {found}, not {expected} (size, strides, paddings)")


def load_dlib_weights(basic_model, network: DlibNetwork) -> None:
    """Set a basic model of the ``dlib-resnet`` backbone and a 128-d ``gap`` neck
    without bias to ``network``'s weights: its convolutions, BatchNorms and dense
    layer in order.  dlib's affine layers are BatchNorms with mean 0 and variance
    ``1 - epsilon``: in inference, gamma * x + beta exactly."""
    import keras

    if max(abs(a - b) for a, b in zip(network.mean_rgb, DLIB_MEAN_RGB)) > 1e-3:
        raise FacekitError(f"The dlib network's input mean {network.mean_rgb} is not the "
                           f"one of dlib's face model {DLIB_MEAN_RGB}.")
    backbone, neck = basic_model.get_layer("backbone"), basic_model.get_layer("neck")
    convolutions = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    norms = [layer for layer in backbone.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    [dense] = [layer for layer in neck.layers if isinstance(layer, keras.layers.Dense)]
    if len(convolutions) != len(network.convolutions) or len(norms) != len(network.affines) \
            or tuple(dense.kernel.shape) != network.dense.shape or dense.use_bias:
        raise ValueError("the model is not dlib's network with a 128-d gap neck without bias")
    for layer, (kernel, bias) in zip(convolutions, network.convolutions):
        layer.set_weights([kernel, bias])
    for layer, (gamma, beta) in zip(norms, network.affines):
        epsilon = layer.epsilon
        layer.set_weights([gamma, beta, np.zeros_like(gamma), np.full_like(gamma, 1 - epsilon)])
    dense.set_weights([network.dense])
