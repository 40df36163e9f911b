"""Margin losses that adapt: to running statistics (CurricularFace, AdaFace, dynamic
AdaCos) or to the embedding's norm (AdaFace, MagFace).

State lives in the training model (facekit.model.losses.LossState): these losses read and
assign ``self.state``.  A loss that needs the norm gets the head's
"cosine+norm" scores, whose last column is the embedding's L2 norm.  Each
follows its authors' reference code; the tests hold them to NumPy versions.
"""

import math

import keras
from keras import ops

from facekit.model.losses import COSINE_EPSILON, MarginLoss, StatefulLoss


def _blend(variable, value, momentum):
    """Assign momentum·value + (1 − momentum)·variable; returns the new value."""
    updated = momentum * ops.stop_gradient(value) + (1.0 - momentum) * variable
    variable.assign(updated)
    return updated


@keras.saving.register_keras_serializable(package="facekit")
class CurricularFaceLoss(StatefulLoss, MarginLoss):
    """CurricularFace (Huang et al. 2020): ArcFace on the target, and negatives harder
    than the target's margin cosine re-weighted to cos·(t + cos), where t is a
    running mean of the target cosine (updated before use, as in the reference)."""

    def __init__(self, *, scale, margin, momentum, name="curricularface", **kwargs):
        super().__init__(name=name, **kwargs)
        self.scale, self.margin, self.momentum = float(scale), float(margin), float(momentum)

    def initial_state(self, num_classes):
        return {"t": 0.0}

    def logits(self, targets, scores, norms=None):
        m = self.margin
        cosine = ops.clip(scores, -1.0 + COSINE_EPSILON, 1.0 - COSINE_EPSILON)
        target = ops.sum(cosine * targets, axis=-1, keepdims=True)
        sine = ops.sqrt(ops.clip(1.0 - ops.square(target), COSINE_EPSILON, 1.0))
        with_margin = target * math.cos(m) - sine * math.sin(m)  # cos(θ + m)
        final_target = ops.where(target > math.cos(math.pi - m), with_margin,
                                 target - math.sin(math.pi - m) * m)
        t = _blend(self.state_for(scores.shape[-1])["t"], ops.mean(target), self.momentum)
        hard = cosine > with_margin
        negatives = ops.where(hard, cosine * (t + cosine), cosine)
        return ops.where(targets > 0, final_target, negatives) * self.scale

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "margin": self.margin,
                "momentum": self.momentum}


@keras.saving.register_keras_serializable(package="facekit")
class AdaFaceLoss(StatefulLoss, MarginLoss):
    """AdaFace (Kim et al. 2022): the margin follows image quality, estimated by the
    embedding norm standardized with running batch statistics:
    z = clip(h·(‖x‖ − μ)/(σ + ε), −1, 1); target logit cos(θ − m·z) − (m + m·z)."""

    needs_norm = True
    eps = 1e-3  # the reference's clamp of cosines and angles

    def __init__(self, *, scale, margin, h, momentum, name="adaface", **kwargs):
        super().__init__(name=name, **kwargs)
        self.scale, self.margin, self.h = float(scale), float(margin), float(h)
        self.momentum = float(momentum)

    def initial_state(self, num_classes):
        return {"batch_mean": 20.0, "batch_std": 100.0}  # the reference's start values

    def logits(self, targets, scores, norms=None):
        eps, m = self.eps, self.margin
        state = self.state_for(scores.shape[-1])
        cosine = ops.clip(scores, -1.0 + eps, 1.0 - eps)
        norms = ops.stop_gradient(ops.clip(norms, 0.001, 100.0))
        count = ops.cast(ops.shape(norms)[0], "float32")
        mean = ops.mean(norms)
        std = ops.sqrt(ops.sum(ops.square(norms - mean)) / ops.maximum(count - 1.0, 1.0))
        mean = _blend(state["batch_mean"], mean, self.momentum)
        std = _blend(state["batch_std"], std, self.momentum)
        scaler = ops.clip((norms - mean) / (std + eps) * self.h, -1.0, 1.0)[:, None]
        theta = ops.arccos(cosine) + targets * (-m * scaler)
        cosine = ops.cos(ops.clip(theta, eps, math.pi - eps))
        return (cosine - targets * (m + m * scaler)) * self.scale

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "margin": self.margin,
                "h": self.h, "momentum": self.momentum}


@keras.saving.register_keras_serializable(package="facekit")
class MagFaceLoss(MarginLoss):
    """MagFace (Meng et al. 2021): an ArcFace margin growing linearly with the
    embedding norm clipped to [l_a, u_a], from l_margin to u_margin, plus
    lambda_g·g(‖x‖) with g(a) = a/u_a² + 1/a, which rewards larger norms for
    easier (higher-quality) faces."""

    needs_norm = True

    def __init__(self, *, scale, l_a, u_a, l_margin, u_margin, lambda_g, name="magface",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.scale, self.l_a, self.u_a = float(scale), float(l_a), float(u_a)
        self.l_margin, self.u_margin, self.lambda_g = (float(l_margin), float(u_margin),
                                                       float(lambda_g))

    def logits(self, targets, scores, norms=None):
        norm = ops.clip(norms, self.l_a, self.u_a)[:, None]
        margin = ((self.u_margin - self.l_margin) / (self.u_a - self.l_a)
                  * (norm - self.l_a) + self.l_margin)
        cosine = ops.clip(scores, -1.0 + COSINE_EPSILON, 1.0 - COSINE_EPSILON)
        sine = ops.sqrt(ops.clip(1.0 - ops.square(cosine), COSINE_EPSILON, 1.0))
        with_margin = cosine * ops.cos(margin) - sine * ops.sin(margin)
        with_margin = ops.where(cosine > ops.cos(math.pi - margin), with_margin,
                                cosine - ops.sin(math.pi - margin) * margin)
        return ops.where(targets > 0, with_margin, cosine) * self.scale

    def penalty(self, norms):
        norm = ops.clip(norms, self.l_a, self.u_a)
        return self.lambda_g * (norm / self.u_a ** 2 + 1.0 / norm)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "l_a": self.l_a,
                "u_a": self.u_a, "l_margin": self.l_margin, "u_margin": self.u_margin,
                "lambda_g": self.lambda_g}


def adacos_fixed_scale(num_classes: int) -> float:
    """AdaCos' fixed scale √2·ln(C − 1)."""
    return math.sqrt(2.0) * math.log(max(num_classes - 1, 2))


@keras.saving.register_keras_serializable(package="facekit")
class AdaCosLoss(StatefulLoss, MarginLoss):
    """AdaCos (Zhang et al. 2019): softmax of scale·cos θ without a margin, where the
    scale is √2·ln(C − 1) or, with ``dynamic``, re-estimated every step as
    ln(B_avg)/cos(min(π/4, θ_med)) from the batch (B_avg: the mean over samples of
    the summed non-target exp(s·cos); θ_med: the median target angle)."""

    def __init__(self, *, dynamic, name="adacos", **kwargs):
        super().__init__(name=name, **kwargs)
        self.dynamic = bool(dynamic)

    def initial_state(self, num_classes):
        return {"scale": adacos_fixed_scale(num_classes)} if self.dynamic else {}

    def logits(self, targets, scores, norms=None):
        cosine = ops.clip(scores, -1.0 + COSINE_EPSILON, 1.0 - COSINE_EPSILON)
        if not self.dynamic:
            return cosine * adacos_fixed_scale(self.num_classes or scores.shape[-1])
        scale = self.state_for(self.num_classes or scores.shape[-1])["scale"]
        observed = ops.stop_gradient(cosine)
        b_avg = ops.sum((1.0 - targets) * ops.exp(scale * observed)) / ops.cast(
            ops.shape(observed)[0], "float32")
        theta = ops.arccos(ops.sum(observed * targets, axis=-1))
        theta_median = ops.quantile(theta, 0.5, method="lower")  # torch.median's choice
        new_scale = ops.log(b_avg) / ops.cos(ops.minimum(math.pi / 4, theta_median))
        scale.assign(new_scale)
        return cosine * new_scale

    def get_config(self):
        return {**super().get_config(), "dynamic": self.dynamic}
