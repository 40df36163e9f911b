"""Embedding distillation: a student learns to give a teacher's embeddings.

``--teacher MODEL`` puts a :class:`Distillation` layer in the training model,
between the basic model and the head.  On every batch it runs the teacher
(frozen, in inference mode) on the same augmented images, resized to the
teacher's input, and adds ``weight * distance(student, teacher)`` to the
model's losses; the embedding passes through unchanged, so the head and its
loss train as without a teacher (any head, partial-fc too), or, without
labels, the distance is the whole loss.  A student narrower or wider than its
teacher reaches the teacher's width through a learned linear ``projection``
that belongs to this layer, never to the basic model.

The target is the teacher's embedding less its running mean over the training
images.  A face model's embeddings share one direction (dlib's lie in a cone:
two random faces have a cosine of 0.85), which tells no two faces apart; against
the raw embeddings a student reaches a low loss by learning that direction alone
and collapses onto it (``benchmarks/lfw_distill.py``).  Centred, the target is
what distinguishes each face, and the student's embeddings are the centred
teacher's.

The teacher is computed per batch rather than cached per image: each epoch
sees new augmentations of every image, and the teacher must see the same view
(``benchmarks/lfw_distill.py`` measures what it costs).  The teacher's weights
are part of each checkpoint, so a run resumes exactly wherever it is.
"""

from __future__ import annotations

import keras
from keras import ops

from facekit.config import DISTANCES
from facekit.model.build import DISTILLATION_LAYER

CENTRE_BATCHES = 100.0  # the teacher's running mean: a plain average up to here


def distance(student, teacher, kind: str):
    """Per-sample distance between two float32 embedding batches (batch, width).

    ``cosine``: 1 - cos(student, teacher), in [0, 2]; ``l2``: the squared Euclidean
    distance between the raw embeddings, summed over the width (the student learns the
    teacher's norm too).
    """
    if kind == "cosine":
        # the norm is clipped from below, so a zero embedding has a finite gradient
        def unit(x):
            return x / ops.maximum(ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True)),
                                   1e-12)
        return 1.0 - ops.sum(unit(student) * unit(teacher), axis=-1)
    if kind == "l2":
        return ops.sum(ops.square(student - teacher), axis=-1)
    raise ValueError(f"Unknown distillation distance '{kind}'; choose one of: "
                     f"{', '.join(DISTANCES)}.")


@keras.saving.register_keras_serializable(package="facekit")
class Distillation(keras.layers.Layer):
    """(images, embedding) -> embedding, adding the distillation loss to the model's.

    Args:
        teacher: the teacher's basic model (raw [0, 255] RGB images -> embeddings); it
            is frozen here.
        distance: ``cosine`` or ``l2`` (:func:`distance`).
        weight: the loss's weight against the head's loss.
        student_width: the student's embedding size; a ``projection`` to the teacher's
            width is learned when the two differ.

    Examples:
        >>> layer = Distillation(teacher, "cosine", 1.0, student_width=128)
        >>> embedding = layer([augmented_images, basic_model(augmented_images)])
    """

    def __init__(self, teacher, distance: str = "cosine", weight: float = 1.0,
                 student_width: int | None = None, **kwargs):
        kwargs.setdefault("name", DISTILLATION_LAYER)
        super().__init__(**kwargs)
        if distance not in DISTANCES:
            raise ValueError(f"Unknown distillation distance '{distance}'; choose one of: "
                             f"{', '.join(DISTANCES)}.")
        self.teacher = teacher
        self.teacher.trainable = False
        self.distance, self.weight = distance, float(weight)
        self.teacher_width = int(teacher.output_shape[-1])
        self.student_width = int(student_width or self.teacher_width)
        self.projection = None
        if self.student_width != self.teacher_width:
            self.projection = keras.layers.Dense(self.teacher_width, use_bias=False,
                                                 dtype="float32", name="projection")
        self.tracker = keras.metrics.Mean(name="distill_loss")
        # the running mean of the teacher's embeddings: the average of the batches seen
        # for the first CENTRE_BATCHES, then an exponential average over about as many;
        # averaged over replicas, and part of each checkpoint
        self.teacher_mean = self.add_weight(shape=(self.teacher_width,), initializer="zeros",
                                            trainable=False, autocast=False,
                                            aggregation="mean", name="teacher_mean")
        self.batches = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                       autocast=False, aggregation="mean", name="batches")

    @property
    def teacher_size(self) -> int:
        return int(self.teacher.input_shape[1])

    def build(self, input_shape):
        if self.projection is not None and not self.projection.built:
            self.projection.build((None, self.student_width))
        self.built = True

    def call(self, inputs, training=False):
        images, embedding = inputs
        self.add_loss(self.loss_of(images, embedding, training))
        return embedding

    def loss_of(self, images, embedding, training=False):
        """The weighted distillation loss of a batch (``call`` adds it to the model's
        losses; a model with its own train step, partial-fc's, adds it itself).  A
        training batch updates the teacher's running mean first."""
        pixels = ops.cast(images, "float32")
        if pixels.shape[1] != self.teacher_size or pixels.shape[2] != self.teacher_size:
            pixels = ops.image.resize(pixels, (self.teacher_size, self.teacher_size),
                                      interpolation="bilinear", antialias=True)
        target = ops.stop_gradient(ops.cast(self.teacher(pixels, training=False), "float32"))
        if training:
            batches = self.batches + 1.0
            rate = 1.0 / ops.minimum(batches, CENTRE_BATCHES)
            self.teacher_mean.assign(self.teacher_mean
                                     + rate * (ops.mean(target, axis=0) - self.teacher_mean))
            self.batches.assign(batches)
        target = target - self.teacher_mean
        student = ops.cast(embedding, "float32")
        if self.projection is not None:
            student = self.projection(student)
        loss = ops.mean(distance(student, target, self.distance))
        self.tracker.update_state(loss)
        return self.weight * loss

    def compute_output_shape(self, input_shape):
        return input_shape[1]

    def get_config(self):
        return {**super().get_config(),
                "teacher": keras.saving.serialize_keras_object(self.teacher),
                "distance": self.distance, "weight": self.weight,
                "student_width": self.student_width}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["teacher"] = keras.saving.deserialize_keras_object(config["teacher"])
        return cls(**config)


def load_teacher(name) -> keras.Model:
    """The teacher's basic model: a run folder, a ``.keras`` model, a pretrained model's
    name or a file ``facekit import`` reads (facekit.model.pretrained.resolve_model)."""
    from facekit.model import embedding_model, load_model
    from facekit.model.pretrained import resolve_model

    teacher = embedding_model(load_model(resolve_model(name)))
    teacher.name = "teacher"
    return teacher
