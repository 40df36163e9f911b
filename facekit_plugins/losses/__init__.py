"""Built-in losses: softmax cross-entropy and the margin-loss family.

Each factory's keyword arguments are the loss's options (``--loss-opt``), with their
defaults stated here once (the classes in ``margin`` and ``adaptive`` take them as
required keywords); ``checks`` bound them when the run is planned.  The first line
of a factory's docstring is what ``facekit list-plugins`` shows.  The formulas,
papers and defaults are in docs/losses.md.
"""

import math

from facekit import hookimpl
from facekit.declare import Check, at_least, fraction, positive

_ANGLE = Check(lambda value: 0 <= value < math.pi / 2, "must be in [0, π/2)")
_COSINE_MARGIN = Check(lambda value: 0 <= value < 1, "must be in [0, 1)")
_MULTIPLIER = Check(lambda value: 0 < value <= 4, "must be in (0, 4]")
_SCALE = {"scale": positive()}


def softmax_loss(label_smoothing=0.0):
    """Softmax cross-entropy from logits (optional label smoothing)."""
    from facekit_plugins.losses.margin import SoftmaxLoss

    return SoftmaxLoss(label_smoothing=label_smoothing)


def arcface_loss(margin1=0.9, margin2=0.4, margin3=0.15, scale=64.0):
    """Design notes' s·(cos(m1·θ + m3) − m2), not insightface's ArcFace (that is combined).

    margin2 is the cosine margin and margin3 the angular one, the other way round
    from insightface; ArcFace is margin1=1 margin2=0 margin3=0.5 (docs/losses.md).
    """
    from facekit_plugins.losses.margin import ArcFaceLoss

    return ArcFaceLoss(margin1=margin1, margin2=margin2, margin3=margin3, scale=scale)


def arcface_simple_loss(scale=64.0, margin=0.45):
    """ArcFace as s·cos(θ + m) from cos and sin, with the cos(π − m) fallback."""
    from facekit_plugins.losses.margin import ArcFaceSimpleLoss

    return ArcFaceSimpleLoss(scale=scale, margin=margin)


def combined_loss(m1=1.0, m2=0.5, m3=0.0, scale=64.0):
    """insightface's s·(cos(m1·θ + m2) − m3): its ArcFace (m2 0.5); CosFace is m3 0.35.

    m1 is SphereFace's multiplicative angular margin.
    """
    from facekit_plugins.losses.margin import CombinedMarginLoss

    return CombinedMarginLoss(m1=m1, m2=m2, m3=m3, scale=scale)


def cosface_loss(scale=64.0, margin=0.35):
    """CosFace: s·(cos θ − m) on the target class."""
    from facekit_plugins.losses.margin import CosFaceLoss

    return CosFaceLoss(scale=scale, margin=margin)


def elasticface_arc_loss(scale=64.0, margin=0.5, std=0.05, plus=False):
    """ElasticFace-Arc: s·cos(θ + m), m ~ N(margin, std²) per sample (plus: ElasticFace+)."""
    from facekit_plugins.losses.margin import ElasticFaceLoss

    return ElasticFaceLoss(scale=scale, margin=margin, std=std, plus=plus, angular=True,
                           name="elasticface_arc")


def elasticface_cos_loss(scale=64.0, margin=0.35, std=0.05, plus=False):
    """ElasticFace-Cos: s·(cos θ − m), m ~ N(margin, std²) per sample (plus: ElasticFace+)."""
    from facekit_plugins.losses.margin import ElasticFaceLoss

    return ElasticFaceLoss(scale=scale, margin=margin, std=std, plus=plus, angular=False,
                           name="elasticface_cos")


def curricularface_loss(scale=64.0, margin=0.5, momentum=0.01):
    """CurricularFace: ArcFace target, hard negatives re-weighted by a running t."""
    from facekit_plugins.losses.adaptive import CurricularFaceLoss

    return CurricularFaceLoss(scale=scale, margin=margin, momentum=momentum)


def adaface_loss(scale=64.0, margin=0.4, h=0.333, momentum=0.01):
    """AdaFace: margin adapted to image quality (the standardized embedding norm)."""
    from facekit_plugins.losses.adaptive import AdaFaceLoss

    return AdaFaceLoss(scale=scale, margin=margin, h=h, momentum=momentum)


def magface_loss(scale=64.0, l_a=10.0, u_a=110.0, l_margin=0.45, u_margin=0.8,
                 lambda_g=35.0):
    """MagFace: ArcFace margin growing with the embedding norm, plus its norm regularizer."""
    from facekit_plugins.losses.adaptive import MagFaceLoss

    return MagFaceLoss(scale=scale, l_a=l_a, u_a=u_a, l_margin=l_margin, u_margin=u_margin,
                       lambda_g=lambda_g)


def adacos_loss(dynamic=False):
    """AdaCos: no margin, scale √2·ln(C − 1), or re-estimated each step (dynamic)."""
    from facekit_plugins.losses.adaptive import AdaCosLoss

    return AdaCosLoss(dynamic=dynamic)


_MOMENTUM = fraction(low_open=True, high_open=False)
_STD = at_least(0.0)
# name: (factory, the scores it expects, the ranges of its options)
LOSSES = {
    "softmax": (softmax_loss, "logits", {"label_smoothing": fraction()}),
    "arcface": (arcface_loss, "cosine", {"margin1": _MULTIPLIER, "margin2": _COSINE_MARGIN,
                                         "margin3": _ANGLE, **_SCALE}),
    "arcface-simple": (arcface_simple_loss, "cosine", {"margin": _ANGLE, **_SCALE}),
    "combined": (combined_loss, "cosine", {"m1": _MULTIPLIER, "m2": _ANGLE,
                                           "m3": _COSINE_MARGIN, **_SCALE}),
    "cosface": (cosface_loss, "cosine", {"margin": _COSINE_MARGIN, **_SCALE}),
    "elasticface-arc": (elasticface_arc_loss, "cosine",
                        {"margin": _ANGLE, "std": _STD, **_SCALE}),
    "elasticface-cos": (elasticface_cos_loss, "cosine",
                        {"margin": _COSINE_MARGIN, "std": _STD, **_SCALE}),
    "curricularface": (curricularface_loss, "cosine",
                       {"margin": _ANGLE, "momentum": _MOMENTUM, **_SCALE}),
    "adacos": (adacos_loss, "cosine", {}),
    "adaface": (adaface_loss, "cosine+norm", {"margin": _ANGLE, "h": positive(),
                                              "momentum": _MOMENTUM, **_SCALE}),
    "magface": (magface_loss, "cosine+norm", {
        "l_a": positive(), "u_a": positive(), "l_margin": _ANGLE, "u_margin": _ANGLE,
        "lambda_g": at_least(0.0), **_SCALE}),
}


@hookimpl
def facekit_register_losses(register):
    for name, (factory, expects, checks) in LOSSES.items():
        register(name, factory, expects=expects, checks=checks)
