"""Built-in losses: softmax cross-entropy and the two ArcFace forms."""

from facekit import hookimpl


def softmax_loss(label_smoothing=0.0):
    """Softmax cross-entropy from logits (optional label smoothing)."""
    from facekit_plugins.keras_losses import SoftmaxLoss

    return SoftmaxLoss(label_smoothing=label_smoothing)


def arcface_loss(margin1=0.9, margin2=0.4, margin3=0.15, scale=64.0):
    """ArcFace, insightface's combined margin: s·(cos(m1·θ + m3) − m2)."""
    from facekit_plugins.keras_losses import ArcFaceLoss

    return ArcFaceLoss(margin1=margin1, margin2=margin2, margin3=margin3, scale=scale)


def arcface_simple_loss(scale=64.0, margin=0.45):
    """ArcFace as s·cos(θ + m) from cos and sin, with the cos(π − m) fallback."""
    from facekit_plugins.keras_losses import ArcFaceSimpleLoss

    return ArcFaceSimpleLoss(scale=scale, margin=margin)


@hookimpl
def facekit_register_losses(register):
    register("softmax", softmax_loss, expects="logits")
    register("arcface", arcface_loss, expects="cosine")
    register("arcface-simple", arcface_simple_loss, expects="cosine")
