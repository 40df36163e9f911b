"""Custom Keras layers used by the built-in plugins (Keras 3, backend-agnostic)."""

import keras
from keras import ops

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


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
class NormDense(keras.layers.Layer):
    """Cosine between the (L2-normalized) embedding and each class's weight vector.

    The weights are L2-normalized along the input axis, so each class centre is
    a unit vector; with ``normalize_embedding`` the output is the cosine in
    [-1, 1] that margin losses such as ArcFace expect.  With ``append_norm`` the
    embedding's L2 norm follows as one last column (for AdaFace, MagFace).
    """

    def __init__(self, units, normalize_embedding=True, append_norm=False,
                 kernel_initializer="glorot_normal", kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.normalize_embedding = bool(normalize_embedding)
        self.append_norm = bool(append_norm)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    centers = 1  # weight vectors per class

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(input_shape[-1], self.units * self.centers),
            initializer=self.kernel_initializer, regularizer=self.kernel_regularizer)

    def call(self, inputs):
        kernel = ops.normalize(ops.cast(self.kernel, self.compute_dtype), axis=0)
        x = ops.cast(inputs, self.compute_dtype)
        scores = self.scores(ops.normalize(x, axis=-1) if self.normalize_embedding else x,
                             kernel)
        if not self.append_norm:
            return scores
        return ops.concatenate([scores, ops.norm(x, axis=-1, keepdims=True)], axis=-1)

    def scores(self, x, kernel):
        return ops.matmul(x, kernel)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units + int(self.append_norm))

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "normalize_embedding": self.normalize_embedding,
            "append_norm": self.append_norm,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        }


@keras.saving.register_keras_serializable(package="facekit")
class SubCenterNormDense(NormDense):
    """Sub-center ArcFace's head: ``centers`` unit vectors per class, and a class's
    cosine is the largest over its centers, so noisy images can gather at a
    sub-center of their own instead of pulling the class apart."""

    def __init__(self, units, centers=3, **kwargs):
        super().__init__(units, **kwargs)
        self.centers = int(centers)

    def scores(self, x, kernel):
        cosines = ops.reshape(ops.matmul(x, kernel), (-1, self.units, self.centers))
        return ops.max(cosines, axis=-1)

    def get_config(self):
        return {**super().get_config(), "centers": self.centers}


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
