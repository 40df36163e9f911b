"""insightface's recognition ONNX files (the model zoo's ``w600k_r50.onnx``,
``w600k_mbf.onnx``, ``glintr100.onnx``, and what arcface_torch's ``torch2onnx.py``
writes), read as data.

The graph is only read, never run: ``onnx.load`` without external data (a file
cannot make facekit read another one), then the parameters are found by the
graph's structure, not by names (the zoo's files were exported by older PyTorch
versions, whose names differ).  PyTorch's export folds a BatchNorm that follows
a convolution into the convolution's weight and bias; such a convolution becomes
the convolution of the arcface_torch state dict with its BatchNorm set to the
identity plus that bias (mean 0, variance ``1 - epsilon``), so what this module
returns is an arcface_torch state dict that facekit.model.arcface_torch maps
onto facekit's layers as it maps a ``.pth``.

- IResNet: one residual block per ``Add``: its branch BatchNormalization ->
  Conv -> PRelu -> Conv, its shortcut the block's input or a 1x1 Conv; a stage
  starts where the branch's second convolution has stride 2; then BatchNorm ->
  Flatten -> Gemm (or MatMul and Add) -> BatchNormalization.
- MobileFaceNet: its convolutions in order (conv, PRelu or not, Add or not)
  read as arcface_torch's ConvBlock / DepthWise / Residual sequence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facekit.errors import FacekitError

KERAS_EPSILON = 1e-5  # what facekit's BatchNorms use (PyTorch's)


class _Graph:
    def __init__(self, model):
        from onnx import numpy_helper

        graph = model.graph
        self.nodes = list(graph.node)
        self.values = {t.name: numpy_helper.to_array(t).astype(np.float32)
                       for t in graph.initializer}
        for node in self.nodes:
            if node.op_type == "Constant":
                for attribute in node.attribute:
                    if attribute.name == "value":
                        self.values[node.output[0]] = numpy_helper.to_array(attribute.t)
        self.producer = {output: node for node in self.nodes for output in node.output}
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def of(self, node, index: int) -> np.ndarray:
        name = node.input[index]
        if name not in self.values:
            raise ValueError(f"{node.op_type} node {node.name or node.output[0]} takes "
                             f"{name}, which is not a constant of the file")
        return self.values[name]

    def attribute(self, node, name, default=None):
        for attribute in node.attribute:
            if attribute.name == name:
                return list(attribute.ints) if attribute.ints else (
                    attribute.f if attribute.type == 1 else attribute.i)
        return default

    def source(self, node, index: int = 0):
        return self.producer.get(node.input[index])

    def next_op(self, node, op_type: str):
        found = [n for n in self.consumers.get(node.output[0], []) if n.op_type == op_type]
        return found[0] if len(found) == 1 else None


def read_onnx_state(path) -> dict[str, np.ndarray]:
    """An arcface_torch state dict (names as its ``backbone.pth``) equivalent to the
    recognition network in the ONNX file ``path``; anything else raises one
    FacekitError naming the file."""
    path = Path(path)
    try:
        import onnx
    except ImportError:
        raise FacekitError("Reading ONNX files needs the onnx package: pip install "
                           "'facekit[onnx]'.") from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends: the file is data
        raise FacekitError(f"'{path}' is not an ONNX model ({type(error).__name__}).") from None
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise FacekitError(f"'{path}' keeps its weights in other files; facekit reads "
                           "self-contained ONNX models only.")
    try:
        graph = _Graph(model)
        if any(n.op_type == "Conv" and graph.attribute(n, "group", 1) > 1 for n in graph.nodes):
            return _mobilefacenet(graph)
        return _iresnet(graph)
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise FacekitError(f"'{path}' is not an insightface IResNet or MobileFaceNet "
                           f"recognition graph: {error}.") from None


def _fused(graph, node, state, conv: str, bn: str) -> None:
    """A Conv with a folded BatchNorm: the weight, and the BatchNorm as identity + bias."""
    weight = graph.of(node, 1)
    channels = weight.shape[0]
    bias = graph.of(node, 2) if len(node.input) > 2 else np.zeros(channels, np.float32)
    state[f"{conv}.weight"] = weight
    state[f"{bn}.weight"] = np.ones(channels, np.float32)
    state[f"{bn}.bias"] = bias
    state[f"{bn}.running_mean"] = np.zeros(channels, np.float32)
    state[f"{bn}.running_var"] = np.full(channels, 1 - KERAS_EPSILON, np.float32)


def _batchnorm(graph, node, state, name: str) -> None:
    if node is None or node.op_type != "BatchNormalization":
        raise ValueError(f"expected a BatchNormalization for {name}")
    epsilon = graph.attribute(node, "epsilon", 1e-5)
    state[f"{name}.weight"], state[f"{name}.bias"] = graph.of(node, 1), graph.of(node, 2)
    state[f"{name}.running_mean"] = graph.of(node, 3)
    # the same normalization with facekit's epsilon
    state[f"{name}.running_var"] = graph.of(node, 4) + np.float32(epsilon - KERAS_EPSILON)


def _prelu(graph, node, state, name: str) -> None:
    if node is None or node.op_type != "PRelu":
        raise ValueError(f"expected a PRelu for {name}")
    state[f"{name}.weight"] = graph.of(node, 1).reshape(-1)


def _linear(graph, node, state, weight: str, bias: str | None):
    """Gemm, or MatMul (+ Add): the (out, in) weight and the bias; returns the node whose
    output is the result."""
    if node is not None and node.op_type == "Gemm":
        matrix = graph.of(node, 1)
        state[weight] = matrix if graph.attribute(node, "transB", 0) else matrix.T
        if bias is not None and len(node.input) > 2:
            state[bias] = graph.of(node, 2)
        return node
    if node is not None and node.op_type == "MatMul":
        state[weight] = graph.of(node, 1).T
        add = graph.next_op(node, "Add")
        if bias is not None and add is not None:
            state[bias] = graph.of(add, 1)
            return add
        return node
    raise ValueError("expected the fully connected layer (Gemm or MatMul)")


def _after_flatten(graph, node):
    while node is not None and node.op_type in ("Flatten", "Reshape", "Dropout", "Identity"):
        consumers = graph.consumers.get(node.output[0], [])
        node = consumers[0] if len(consumers) == 1 else None
    return node


def _iresnet(graph) -> dict[str, np.ndarray]:
    state: dict[str, np.ndarray] = {}
    convs = [n for n in graph.nodes if n.op_type == "Conv"]
    stem = convs[0]
    _fused(graph, stem, state, "conv1", "bn1")
    _prelu(graph, graph.next_op(stem, "PRelu"), state, "prelu")
    stage, block = 0, 0
    last = None
    for add in (n for n in graph.nodes if n.op_type == "Add"):
        branch, shortcut = _branch_and_shortcut(graph, add)
        if branch is None:
            continue  # not a residual block (a bias Add of MatMul)
        prelu = graph.source(branch)
        conv1 = graph.source(prelu)
        bn1 = graph.source(conv1)
        if graph.attribute(branch, "strides", [1, 1])[0] == 2 or stage == 0:
            stage, block = stage + 1, 0
        name = f"layer{stage}.{block}"
        _batchnorm(graph, bn1, state, f"{name}.bn1")
        _fused(graph, conv1, state, f"{name}.conv1", f"{name}.bn2")
        _prelu(graph, prelu, state, f"{name}.prelu")
        _fused(graph, branch, state, f"{name}.conv2", f"{name}.bn3")
        if shortcut is not None:
            _fused(graph, shortcut, state, f"{name}.downsample.0", f"{name}.downsample.1")
        block, last = block + 1, add
    if last is None or stage != 4:
        raise ValueError(f"found {stage} stages of residual blocks, not IResNet's 4")
    bn2 = graph.next_op(last, "BatchNormalization")
    _batchnorm(graph, bn2, state, "bn2")
    fc = _linear(graph, _after_flatten(graph, graph.consumers[bn2.output[0]][0]), state,
                 "fc.weight", "fc.bias")
    _batchnorm(graph, graph.next_op(fc, "BatchNormalization"), state, "features")
    return state


def _branch_and_shortcut(graph, add):
    """(the residual branch's second Conv, the shortcut's Conv or None) of an IResNet
    block's Add, or (None, None) for another Add."""
    sources = [graph.source(add, 0), graph.source(add, 1)]
    for index, node in enumerate(sources):  # the branch: BatchNorm, Conv, PRelu, Conv
        chain = [node]
        for _ in range(3):
            chain.append(graph.source(chain[-1]) if chain[-1] is not None else None)
        if [getattr(n, "op_type", None) for n in chain] == [
                "Conv", "PRelu", "Conv", "BatchNormalization"]:
            other = sources[1 - index]  # either order: PyTorch's out + identity, or Keras'
            return node, other if other is not None and other.op_type == "Conv" else None
    return None, None


def _mobilefacenet(graph) -> dict[str, np.ndarray]:
    state: dict[str, np.ndarray] = {}
    convs = [n for n in graph.nodes if n.op_type == "Conv"]
    position = 0

    def take():
        nonlocal position
        if position >= len(convs):
            raise ValueError("the graph ends before MobileFaceNet does")
        position += 1
        return convs[position - 1]

    def conv_block(prefix):  # ConvBlock: conv (BN folded), PReLU
        node = take()
        _fused(graph, node, state, f"{prefix}.layers.0", f"{prefix}.layers.1")
        _prelu(graph, graph.next_op(node, "PRelu"), state, f"{prefix}.layers.2")

    def depthwise(prefix):  # DepthWise: expand, depthwise, linear projection
        conv_block(f"{prefix}.layers.0")
        conv_block(f"{prefix}.layers.1")
        node = take()
        _fused(graph, node, state, f"{prefix}.layers.2.layers.0", f"{prefix}.layers.2.layers.1")

    def residuals(prefix):
        count = 0
        while position + 3 <= len(convs) and _starts_residual(graph, convs, position):
            depthwise(f"{prefix}.layers.{count}")
            count += 1
        if not count:
            raise ValueError(f"no residual block where {prefix} should be")

    conv_block("layers.0")
    if tuple(graph.of(convs[1], 1).shape[2:]) == (3, 3):  # the grouped stem ConvBlock
        conv_block("layers.1")
    else:
        residuals("layers.1")
    for index in (2, 4, 6):
        if position + 3 > len(convs) or _starts_residual(graph, convs, position):
            raise ValueError(f"no downsampling block where layers.{index} should be")
        depthwise(f"layers.{index}")
        residuals(f"layers.{index + 1}")
    conv_block("conv_sep")
    gdc = take()
    _fused(graph, gdc, state, "features.layers.0.layers.0", "features.layers.0.layers.1")
    fc = _linear(graph, _after_flatten(graph, graph.consumers[gdc.output[0]][0]), state,
                 "features.layers.2.weight", None)
    _batchnorm(graph, graph.next_op(fc, "BatchNormalization"), state, "features.layers.3")
    if position != len(convs):
        raise ValueError(f"{len(convs) - position} convolutions follow the network")
    return state


def _starts_residual(graph, convs, position: int) -> bool:
    """Whether the three convolutions from ``position`` are a DepthWise block whose
    output is added to its input (arcface_torch's Residual)."""
    block_input = convs[position].input[0]
    return any(add.op_type == "Add" and block_input in add.input
               for add in graph.consumers.get(convs[position + 2].output[0], []))
