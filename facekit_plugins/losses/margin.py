"""Classification and margin losses (Keras 3 ``Loss`` subclasses, keras.ops only).

Every loss takes integer labels of shape (batch,) or (batch, 1), or one-hot
labels of shape (batch, classes), and computes in float32 whatever the
model's precision (facekit.model.losses.MarginLoss).  Their options' defaults are
the factories' in ``facekit_plugins.losses``.  Cosines are clipped before acos/sqrt so neither the loss
nor its gradient can be NaN or infinite at cos = ±1.
"""

import math

import keras
from keras import ops

from facekit.model.losses import COSINE_EPSILON, MarginLoss

@keras.saving.register_keras_serializable(package="facekit")
class SoftmaxLoss(MarginLoss):
    """Softmax cross-entropy from logits, with optional label smoothing."""

    def __init__(self, *, label_smoothing, name="softmax", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def logits(self, targets, scores, norms=None):
        return scores

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def combined_margin_logits(targets, scores, multiplicative, angular, additive, scale):
    """scale · (cos(multiplicative·θ + angular) − additive) on the target class and
    scale · cos θ elsewhere; where the angle would pass π the target keeps its plain
    cosine (no margin), as in the original MXNet implementation."""
    cosine = ops.clip(scores, -1.0 + COSINE_EPSILON, 1.0 - COSINE_EPSILON)
    margin_theta = ops.arccos(cosine) * multiplicative + angular
    use_margin = ops.logical_and(targets > 0, margin_theta <= math.pi)
    target_logit = ops.cos(margin_theta) - additive
    return ops.where(use_margin, target_logit, cosine) * scale


@keras.saving.register_keras_serializable(package="facekit")
class ArcFaceLoss(MarginLoss):
    """The design notes' combined margin: target logit cos(m1·θ + m3) − m2, times scale.

    Beware the naming: here margin2 is the additive *cosine* margin and margin3
    the additive *angular* one, the other way round from insightface (see
    ``CombinedMarginLoss``).  The standard ArcFace setting is margin1=1,
    margin2=0, margin3=0.5.
    """

    def __init__(self, *, margin1, margin2, margin3, scale, name="arcface", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin1, self.margin2, self.margin3 = float(margin1), float(margin2), float(margin3)
        self.scale = float(scale)

    def logits(self, targets, scores, norms=None):
        return combined_margin_logits(targets, scores, self.margin1, self.margin3,
                                      self.margin2, self.scale)

    def get_config(self):
        return {**super().get_config(), "margin1": self.margin1, "margin2": self.margin2,
                "margin3": self.margin3, "scale": self.scale}


@keras.saving.register_keras_serializable(package="facekit")
class CombinedMarginLoss(MarginLoss):
    """insightface's combined margin with insightface's names: target logit
    cos(m1·θ + m2) − m3, times scale (m1 multiplicative angular, SphereFace; m2
    additive angular, ArcFace; m3 additive cosine, CosFace)."""

    def __init__(self, *, m1, m2, m3, scale, name="combined", **kwargs):
        super().__init__(name=name, **kwargs)
        self.m1, self.m2, self.m3, self.scale = float(m1), float(m2), float(m3), float(scale)

    def logits(self, targets, scores, norms=None):
        return combined_margin_logits(targets, scores, self.m1, self.m2, self.m3, self.scale)

    def get_config(self):
        return {**super().get_config(), "m1": self.m1, "m2": self.m2, "m3": self.m3,
                "scale": self.scale}


@keras.saving.register_keras_serializable(package="facekit")
class CosFaceLoss(MarginLoss):
    """CosFace (large margin cosine loss): scale · (cos θ − margin) on the target."""

    def __init__(self, *, scale, margin, name="cosface", **kwargs):
        super().__init__(name=name, **kwargs)
        self.scale, self.margin = float(scale), float(margin)

    def logits(self, targets, scores, norms=None):
        return (ops.clip(scores, -1.0, 1.0) - targets * self.margin) * self.scale

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "margin": self.margin}


@keras.saving.register_keras_serializable(package="facekit")
class ElasticFaceLoss(MarginLoss):
    """ElasticFace: ArcFace (``angular``) or CosFace margins drawn per sample from
    N(margin, std²) at every step.  With ``plus`` (ElasticFace+) the drawn margins
    are sorted and handed out by the order of the target cosines, indexed as the
    reference code does (fdbtrs/ElasticFace).  Angular margins that would take the
    angle past π leave the target's plain cosine, as ``arcface`` does."""

    def __init__(self, *, scale, margin, std, plus, angular, seed=None, name="elasticface",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.scale, self.margin, self.std = float(scale), float(margin), float(std)
        self.plus, self.angular = bool(plus), bool(angular)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def sample_margins(self, targets, scores):
        """One margin per sample, shape (batch, 1)."""
        margins = keras.random.normal((ops.shape(scores)[0],), mean=self.margin,
                                      stddev=self.std, seed=self.seed_generator)
        if self.plus:
            target_cosine = ops.stop_gradient(ops.sum(scores * targets, axis=-1))
            order = ops.argsort(-target_cosine)  # most similar first
            margins = ops.take(ops.sort(margins), order)
        return ops.expand_dims(margins, -1)

    def logits(self, targets, scores, norms=None):
        margins = self.sample_margins(targets, scores)
        if not self.angular:
            return (ops.clip(scores, -1.0, 1.0) - targets * margins) * self.scale
        return combined_margin_logits(targets, scores, 1.0, margins, 0.0, self.scale)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "margin": self.margin,
                "std": self.std, "plus": self.plus, "angular": self.angular,
                "seed": self.seed}


@keras.saving.register_keras_serializable(package="facekit")
class ArcFaceSimpleLoss(MarginLoss):
    """ArcFace as cos(θ + m) = cos·cos(m) − sin·sin(m), times scale.

    Past the threshold cos(π − m) the angle plus margin would exceed π, so the
    target falls back to cos − sin(m)·m, keeping the logit monotonic in θ.
    """

    def __init__(self, *, scale, margin, name="arcface_simple", **kwargs):
        super().__init__(name=name, **kwargs)
        self.scale, self.margin = float(scale), float(margin)

    def logits(self, targets, scores, norms=None):
        cos_m, sin_m = math.cos(self.margin), math.sin(self.margin)
        threshold = math.cos(math.pi - self.margin)
        cosine = ops.clip(scores, -1.0 + COSINE_EPSILON, 1.0 - COSINE_EPSILON)
        sine = ops.sqrt(ops.clip(1.0 - ops.square(cosine), COSINE_EPSILON, 1.0))
        with_margin = cosine * cos_m - sine * sin_m
        target_logit = ops.where(cosine > threshold, with_margin, cosine - sin_m * self.margin)
        return ops.where(targets > 0, target_logit, cosine) * self.scale

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "margin": self.margin}
