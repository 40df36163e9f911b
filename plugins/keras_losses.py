"""Classification and margin losses (Keras 3 ``Loss`` subclasses, keras.ops only).

Every loss takes integer labels of shape (batch,) or (batch, 1), or one-hot
labels of shape (batch, classes), and computes in float32 whatever the
model's precision.  Cosines are clipped before acos/sqrt so neither the loss
nor its gradient can be NaN or infinite at cos = ±1.
"""

import math

import keras
from keras import ops

# Keep cosines this far inside [-1, 1]: acos' and sqrt's derivatives are
# infinite at the ends, and float32 rounding can push a cosine past them.
COSINE_EPSILON = 1e-6


def one_hot_targets(y_true, scores):
    """One-hot float32 targets from integer or one-hot labels."""
    classes = scores.shape[-1]
    if len(y_true.shape) == len(scores.shape) and y_true.shape[-1] == classes and classes != 1:
        return ops.cast(y_true, "float32")
    labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
    return ops.one_hot(labels, classes, dtype="float32")


class _ClassificationLoss(keras.losses.Loss):
    """Cross-entropy of ``self.logits(targets, scores)`` against the targets."""

    label_smoothing = 0.0

    def call(self, y_true, y_pred):
        scores = ops.cast(y_pred, "float32")
        targets = one_hot_targets(y_true, scores)
        logits = self.logits(targets, scores)
        return keras.losses.categorical_crossentropy(
            targets, logits, from_logits=True, label_smoothing=self.label_smoothing)

    def logits(self, targets, scores):
        raise NotImplementedError


@keras.saving.register_keras_serializable(package="facekit")
class SoftmaxLoss(_ClassificationLoss):
    """Softmax cross-entropy from logits, with optional label smoothing."""

    def __init__(self, label_smoothing=0.0, name="softmax", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def logits(self, targets, scores):
        return scores

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="facekit")
class ArcFaceLoss(_ClassificationLoss):
    """insightface's combined margin: target logit cos(m1·θ + m3) − m2, times scale.

    Where m1·θ + m3 > π the cosine would wrap around, so the target keeps its
    plain cosine (no margin), as in the original MXNet implementation.  The
    standard ArcFace setting is margin1=1, margin2=0, margin3=0.5.
    """

    def __init__(self, margin1=0.9, margin2=0.4, margin3=0.15, scale=64.0,
                 name="arcface", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin1, self.margin2, self.margin3 = float(margin1), float(margin2), float(margin3)
        self.scale = float(scale)

    def logits(self, targets, scores):
        cosine = ops.clip(scores, -1.0 + COSINE_EPSILON, 1.0 - COSINE_EPSILON)
        theta = ops.arccos(cosine)
        margin_theta = theta * self.margin1 + self.margin3
        use_margin = ops.logical_and(targets > 0, margin_theta <= math.pi)
        target_logit = ops.cos(margin_theta) - self.margin2
        return ops.where(use_margin, target_logit, cosine) * self.scale

    def get_config(self):
        return {**super().get_config(), "margin1": self.margin1, "margin2": self.margin2,
                "margin3": self.margin3, "scale": self.scale}


@keras.saving.register_keras_serializable(package="facekit")
class ArcFaceSimpleLoss(_ClassificationLoss):
    """ArcFace as cos(θ + m) = cos·cos(m) − sin·sin(m), times scale.

    Past the threshold cos(π − m) the angle plus margin would exceed π, so the
    target falls back to cos − sin(m)·m, keeping the logit monotonic in θ.
    """

    def __init__(self, scale=64.0, margin=0.45, name="arcface_simple", **kwargs):
        super().__init__(name=name, **kwargs)
        self.scale, self.margin = float(scale), float(margin)

    def logits(self, targets, scores):
        cos_m, sin_m = math.cos(self.margin), math.sin(self.margin)
        threshold = math.cos(math.pi - self.margin)
        cosine = ops.clip(scores, -1.0 + COSINE_EPSILON, 1.0 - COSINE_EPSILON)
        sine = ops.sqrt(ops.clip(1.0 - ops.square(cosine), COSINE_EPSILON, 1.0))
        with_margin = cosine * cos_m - sine * sin_m
        target_logit = ops.where(cosine > threshold, with_margin, cosine - sin_m * self.margin)
        return ops.where(targets > 0, target_logit, cosine) * self.scale

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "margin": self.margin}
