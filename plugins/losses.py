"""Built-in losses: softmax cross-entropy and the margin-loss family.

Each factory's keyword arguments are the loss's options (``--loss-opt``); the
first line of its docstring is what ``facekit list-plugins`` shows.  The
formulas, papers and defaults are in docs/losses.md.
"""

from facekit import hookimpl


def softmax_loss(label_smoothing=0.0):
    """Softmax cross-entropy from logits (optional label smoothing)."""
    from facekit_plugins.keras_losses import SoftmaxLoss

    return SoftmaxLoss(label_smoothing=label_smoothing)


def arcface_loss(margin1=0.9, margin2=0.4, margin3=0.15, scale=64.0):
    """Design notes' s·(cos(m1·θ + m3) − m2): margin2 cosine, margin3 angular (see combined).

    ArcFace is margin1=1 margin2=0 margin3=0.5; docs/losses.md sets the names
    side by side with insightface's.
    """
    from facekit_plugins.keras_losses import ArcFaceLoss

    return ArcFaceLoss(margin1=margin1, margin2=margin2, margin3=margin3, scale=scale)


def arcface_simple_loss(scale=64.0, margin=0.45):
    """ArcFace as s·cos(θ + m) from cos and sin, with the cos(π − m) fallback."""
    from facekit_plugins.keras_losses import ArcFaceSimpleLoss

    return ArcFaceSimpleLoss(scale=scale, margin=margin)


def combined_loss(m1=1.0, m2=0.5, m3=0.0, scale=64.0):
    """insightface's s·(cos(m1·θ + m2) − m3): m2 angular (ArcFace 0.5), m3 cosine (CosFace 0.35).

    m1 is SphereFace's multiplicative angular margin.
    """
    from facekit_plugins.keras_losses import CombinedMarginLoss

    return CombinedMarginLoss(m1=m1, m2=m2, m3=m3, scale=scale)


def cosface_loss(scale=64.0, margin=0.35):
    """CosFace: s·(cos θ − m) on the target class."""
    from facekit_plugins.keras_losses import CosFaceLoss

    return CosFaceLoss(scale=scale, margin=margin)


def elasticface_arc_loss(scale=64.0, margin=0.5, std=0.05, plus=False):
    """ElasticFace-Arc: s·cos(θ + m), m ~ N(margin, std²) per sample (plus: ElasticFace+)."""
    from facekit_plugins.keras_losses import ElasticFaceLoss

    return ElasticFaceLoss(scale=scale, margin=margin, std=std, plus=plus, angular=True,
                           name="elasticface_arc")


def elasticface_cos_loss(scale=64.0, margin=0.35, std=0.05, plus=False):
    """ElasticFace-Cos: s·(cos θ − m), m ~ N(margin, std²) per sample (plus: ElasticFace+)."""
    from facekit_plugins.keras_losses import ElasticFaceLoss

    return ElasticFaceLoss(scale=scale, margin=margin, std=std, plus=plus, angular=False,
                           name="elasticface_cos")


def curricularface_loss(scale=64.0, margin=0.5, momentum=0.01):
    """CurricularFace: ArcFace target, hard negatives re-weighted by a running t."""
    from facekit_plugins.keras_adaptive_losses import CurricularFaceLoss

    return CurricularFaceLoss(scale=scale, margin=margin, momentum=momentum)


def adaface_loss(scale=64.0, margin=0.4, h=0.333, momentum=0.01):
    """AdaFace: margin adapted to image quality (the standardized embedding norm)."""
    from facekit_plugins.keras_adaptive_losses import AdaFaceLoss

    return AdaFaceLoss(scale=scale, margin=margin, h=h, momentum=momentum)


def magface_loss(scale=64.0, l_a=10.0, u_a=110.0, l_margin=0.45, u_margin=0.8,
                 lambda_g=35.0):
    """MagFace: ArcFace margin growing with the embedding norm, plus its norm regularizer."""
    from facekit_plugins.keras_adaptive_losses import MagFaceLoss

    return MagFaceLoss(scale=scale, l_a=l_a, u_a=u_a, l_margin=l_margin, u_margin=u_margin,
                       lambda_g=lambda_g)


def adacos_loss(dynamic=False):
    """AdaCos: no margin, scale √2·ln(C − 1), or re-estimated each step (dynamic)."""
    from facekit_plugins.keras_adaptive_losses import AdaCosLoss

    return AdaCosLoss(dynamic=dynamic)


@hookimpl
def facekit_register_losses(register):
    register("softmax", softmax_loss, expects="logits")
    for name, factory in (("arcface", arcface_loss), ("arcface-simple", arcface_simple_loss),
                          ("combined", combined_loss), ("cosface", cosface_loss),
                          ("elasticface-arc", elasticface_arc_loss),
                          ("elasticface-cos", elasticface_cos_loss),
                          ("curricularface", curricularface_loss), ("adacos", adacos_loss)):
        register(name, factory, expects="cosine")
    register("adaface", adaface_loss, expects="cosine+norm")
    register("magface", magface_loss, expects="cosine+norm")
