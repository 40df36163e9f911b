"""facekit's IResNet and MobileFaceNet written as insightface's recognition ONNX files.

The graph is the one PyTorch writes for arcface_torch's networks (its
``torch2onnx.py``), so insightface's ``model_zoo.get_model`` and the tools built on
it take the file, and ``facekit import`` reads it back (facekit.model.onnx_file):
NCHW float input of ``(pixel - 127.5) / 127.5`` RGB; Conv with each following
BatchNorm folded in, PRelu, Add, BatchNormalization where a BatchNorm follows no
convolution, Flatten, Gemm; one output.

The basic model's Keras graph is walked layer by layer (``Functional``'s own
traversal), each layer becoming its ONNX nodes.  A layer this module does not
write (facekit's other backbones) raises :class:`Unwritable`; facekit.eval.export
then converts the model with tf2onnx behind the same input convention.
"""

from __future__ import annotations

import numpy as np

INPUT_NAME = "input.1"  # what arcface_torch's export names it
MEAN = STD = 127.5


class Unwritable(Exception):
    """A layer this writer has no ONNX form for."""


class _Value:
    """A tensor of the graph being written: its ONNX name (once emitted), and what is
    still to be applied to it.

    ``affine`` (a, b): the Keras tensor is ``a * onnx + b`` (the input's
    normalization, undone by the backbone's own Rescaling); ``pads``: zeros a
    ZeroPadding2D put around it, for the next convolution; ``conv``: a convolution
    not yet written, so that a BatchNorm after it folds into its weight and bias;
    ``flattened``: the (H, W, C) shape Keras flattened (ONNX flattens C, H, W).
    """

    def __init__(self, name=None, affine=None, pads=None, conv=None, flattened=None):
        self.name, self.affine, self.pads = name, affine, pads
        self.conv, self.flattened = conv, flattened


class _Writer:
    def __init__(self):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers, self.count = [], [], 0

    def constant(self, name: str, array) -> str:
        self.initializers.append(self.numpy_helper.from_array(
            np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attributes) -> str:
        self.count += 1
        output = f"{name}:{self.count}"
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=name, **attributes))
        return output

    def emitted(self, value: _Value, pads: bool = True) -> str:
        """The ONNX name of ``value`` with everything pending applied (but its ``pads``
        without ``pads``: a convolution takes them); ``value`` is updated, so a tensor
        used twice is written once."""
        if value.conv is not None:
            conv, value.conv = value.conv, None
            value.name = self._write_conv(value.name, conv)
        if value.pads is not None and pads:
            pads, value.pads = value.pads, None
            value.name = self.node("Pad", [value.name, self.constant(
                f"pads_{self.count}", np.array([0, 0, pads[0], pads[1], 0, 0, pads[2],
                                                pads[3]], np.int64))], "Pad")
        if value.affine is not None and value.affine != (1.0, 0.0):
            (a, b), value.affine = value.affine, None
            value.name = self.node("Mul", [value.name, self.constant(f"scale_{self.count}",
                                                                     np.float32(a))], "mul")
            value.name = self.node("Add", [value.name, self.constant(f"offset_{self.count}",
                                                                     np.float32(b))], "add")
        value.affine = None
        return value.name

    def _write_conv(self, source: str, conv: dict) -> str:
        inputs = [source, self.constant(f"{conv['name']}.weight", conv["weight"])]
        if conv["bias"] is not None:
            inputs.append(self.constant(f"{conv['name']}.bias", conv["bias"]))
        return self.node("Conv", inputs, conv["name"], kernel_shape=list(conv["weight"].shape[2:]),
                         strides=conv["strides"], pads=conv["pads"], group=conv["group"],
                         dilations=conv["dilations"])

    # -- layers ---------------------------------------------------------------------

    def layer(self, layer, inputs: list[_Value], input_shapes) -> _Value:
        import keras

        kind = type(layer).__name__
        value = inputs[0]
        if isinstance(layer, keras.layers.Rescaling):
            scale, offset = float(layer.scale), float(layer.offset)
            a, b = value.affine or (1.0, 0.0)
            if value.conv is not None or value.pads is not None:
                self.emitted(value)
                a, b = 1.0, 0.0
            a, b = a * scale, b * scale + offset
            near = abs(a - 1.0) < 1e-6 and abs(b) < 1e-6
            return _Value(value.name, None if near else (a, b))
        if isinstance(layer, (keras.layers.Dropout, keras.layers.Identity)):
            return value
        if isinstance(layer, keras.layers.ZeroPadding2D):
            (top, bottom), (left, right) = layer.padding
            return _Value(self.emitted(value), pads=(top, left, bottom, right))
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kernel = layer.get_weights()[0]  # (kh, kw, C, m)
            channels, multiplier = kernel.shape[2], kernel.shape[3]
            weight = kernel.transpose(2, 3, 0, 1).reshape(channels * multiplier, 1,
                                                          *kernel.shape[:2])
            return self._conv(layer, value, weight, input_shapes[0], group=channels)
        if isinstance(layer, keras.layers.Conv2D):
            if kind not in ("Conv2D", "GroupConv2D"):
                raise Unwritable(kind)
            kernel = layer.get_weights()[0]  # (kh, kw, in / groups, out)
            return self._conv(layer, value, kernel.transpose(3, 2, 0, 1), input_shapes[0],
                              group=layer.groups)
        if isinstance(layer, keras.layers.BatchNormalization):
            return self._batchnorm(layer, value, input_shapes[0])
        if isinstance(layer, keras.layers.PReLU):
            alpha = layer.get_weights()[0]
            if alpha.ndim == 3 and alpha.shape[:2] != (1, 1):
                raise Unwritable("PReLU without shared spatial axes")
            slope = alpha.reshape(-1, 1, 1) if len(input_shapes[0]) == 4 else alpha.reshape(-1)
            return _Value(self.node("PRelu", [self.emitted(value), self.constant(
                f"{layer.name}.weight", slope)], layer.name))
        if isinstance(layer, keras.layers.Add) and kind == "Add":
            names = [self.emitted(v) for v in inputs]
            out = names[0]
            for other in names[1:]:
                out = self.node("Add", [out, other], layer.name)
            return _Value(out)
        if isinstance(layer, keras.layers.Flatten):
            shape = tuple(input_shapes[0][1:])
            return _Value(self.node("Flatten", [self.emitted(value)], layer.name, axis=1),
                          flattened=shape if len(shape) == 3 else None)
        if isinstance(layer, keras.layers.Dense) and kind == "Dense":
            if layer.activation is not keras.activations.linear:
                raise Unwritable("Dense with an activation")
            weights = layer.get_weights()
            kernel = weights[0]
            if value.flattened is not None:  # rows in (H, W, C) order -> (C, H, W)
                height, width, channels = value.flattened
                kernel = kernel.reshape(height, width, channels, -1).transpose(
                    2, 0, 1, 3).reshape(height * width * channels, -1)
            inputs_ = [self.emitted(value), self.constant(f"{layer.name}.weight", kernel.T)]
            if layer.use_bias:
                inputs_.append(self.constant(f"{layer.name}.bias", weights[1]))
            return _Value(self.node("Gemm", inputs_, layer.name, transB=1))
        raise Unwritable(kind)

    def _conv(self, layer, value: _Value, weight, input_shape, group: int) -> _Value:
        if tuple(layer.dilation_rate) != (1, 1) and layer.padding == "same":
            raise Unwritable("dilated convolution with same padding")
        strides = list(layer.strides)
        pads = list(value.pads or (0, 0, 0, 0))
        if layer.padding == "same":  # TensorFlow's: the odd pixel after
            extra = []
            for axis in (0, 1):
                size, k, s = input_shape[1 + axis], weight.shape[2 + axis], strides[axis]
                total = max((-(-size // s) - 1) * s + k - size, 0)
                extra.append((total // 2, total - total // 2))
            pads = [pads[0] + extra[0][0], pads[1] + extra[1][0],
                    pads[2] + extra[0][1], pads[3] + extra[1][1]]
        weights = layer.get_weights()
        bias = weights[1] if layer.use_bias else None
        source = self.emitted(value, pads=False)
        return _Value(source, conv={"name": layer.name, "weight": weight.astype(np.float32),
                                    "bias": bias, "strides": strides, "pads": pads,
                                    "group": int(group), "dilations": list(layer.dilation_rate)})

    def _batchnorm(self, layer, value: _Value, input_shape) -> _Value:
        weights = dict(zip([w.path.split("/")[-1] for w in layer.weights], layer.get_weights()))
        channels = int(input_shape[-1])
        gamma = weights.get("gamma", np.ones(channels, np.float32))
        beta = weights.get("beta", np.zeros(channels, np.float32))
        mean, variance = weights["moving_mean"], weights["moving_variance"]
        if int(layer.axis if isinstance(layer.axis, int) else layer.axis[0]) not in (
                -1, len(input_shape) - 1):
            raise Unwritable("BatchNorm over another axis than the channels")
        if value.conv is not None:  # fold it into the convolution, as PyTorch's export does
            conv = dict(value.conv)
            factor = gamma / np.sqrt(variance + layer.epsilon)
            conv["weight"] = conv["weight"] * factor.reshape(-1, 1, 1, 1)
            bias = conv["bias"] if conv["bias"] is not None else np.zeros(channels, np.float32)
            conv["bias"] = ((bias - mean) * factor + beta).astype(np.float32)
            return _Value(value.name, conv=conv)
        source = self.emitted(value)
        return _Value(self.node("BatchNormalization", [
            source, self.constant(f"{layer.name}.weight", gamma),
            self.constant(f"{layer.name}.bias", beta),
            self.constant(f"{layer.name}.running_mean", mean),
            self.constant(f"{layer.name}.running_var", variance)], layer.name,
            epsilon=float(layer.epsilon)))

    # -- the graph ------------------------------------------------------------------

    def model(self, model, inputs: list[_Value]) -> list[_Value]:
        """Write a functional Keras model applied to ``inputs``; its outputs."""
        import keras

        def operation(op):
            if isinstance(op, keras.Model):
                if not hasattr(op, "_run_through_graph"):
                    raise Unwritable(type(op).__name__)
                return lambda *args, **kwargs: self.model(op, _flat(args))
            if isinstance(op, keras.layers.InputLayer):
                return lambda *args, **kwargs: args[0]
            shapes = [tuple(t.shape) for t in _inputs_of(op)]
            return lambda *args, **kwargs: self.layer(op, _flat(args), shapes)

        if not hasattr(model, "_run_through_graph"):
            raise Unwritable(type(model).__name__)
        outputs = model._run_through_graph(inputs if len(inputs) > 1 else inputs[0],
                                           operation_fn=operation)
        return _flat([outputs])


def _flat(items) -> list[_Value]:
    found = []
    for item in items:
        if isinstance(item, _Value):
            found.append(item)
        elif isinstance(item, (list, tuple)):
            found += _flat(item)
    return found


def _inputs_of(layer):
    inputs = layer.input
    return inputs if isinstance(inputs, (list, tuple)) else [inputs]


def insightface_graph(model, metadata: str | None = None):
    """The ONNX ModelProto of the basic ``model`` (raw [0, 255] RGB -> embedding) with
    insightface's recognition convention; raises Unwritable for a layer it cannot
    write."""
    import onnx
    from onnx import TensorProto, helper

    size = int(model.input_shape[1])
    writer = _Writer()
    image = _Value(INPUT_NAME, affine=(STD, MEAN))  # Keras' pixels = 127.5 * input + 127.5
    (output,) = writer.model(model, [image])
    name = writer.emitted(output)
    width = int(model.output_shape[-1])
    graph = helper.make_graph(
        writer.nodes, "facekit_recognition",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", width])],
        writer.initializers)
    proto = helper.make_model(graph, producer_name="facekit",
                              opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8  # what onnxruntime releases of the last years all read
    onnx.checker.check_model(proto)
    return proto
