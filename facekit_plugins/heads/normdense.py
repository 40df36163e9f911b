"""The cosine heads' layers: NormDense and sub-center NormDense (Keras 3, keras.ops only)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="facekit")
class NormDense(keras.layers.Layer):
    """Cosine between the (L2-normalized) embedding and each class's weight vector.

    The weights are L2-normalized along the input axis, so each class centre is
    a unit vector; with ``normalize_embedding`` the output is the cosine in
    [-1, 1] that margin losses such as ArcFace expect.  With ``append_norm`` the
    embedding's L2 norm follows as one last column (for AdaFace, MagFace).  The
    ``normdense`` head builds it (its defaults are the factory's).

    Args:
        units: the number of classes.
        normalize_embedding: L2-normalize the embedding (False: the dot product with
            unit class centres).
        append_norm: add the embedding's L2 norm as one last column.
        kernel_initializer: the class centres' initializer (glorot normal, as insightface).
        kernel_regularizer: an optional regularizer of the class centres.

    Examples:
        >>> layer = NormDense(10, normalize_embedding=True, append_norm=False)
        >>> layer(keras.ops.ones((2, 4))).shape
        (2, 10)
    """

    def __init__(self, units, *, normalize_embedding, append_norm,
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

    def __init__(self, units, *, centers, **kwargs):
        super().__init__(units, **kwargs)
        self.centers = int(centers)

    def scores(self, x, kernel):
        cosines = ops.reshape(ops.matmul(x, kernel), (-1, self.units, self.centers))
        return ops.max(cosines, axis=-1)

    def get_config(self):
        return {**super().get_config(), "centers": self.centers}
