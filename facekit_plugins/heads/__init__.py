"""Built-in heads: the layer between the embedding and the loss.

Each factory's keyword arguments are the head's options (``--head-opt``), their
defaults stated here once; the layers are in ``normdense`` and, for partial-fc,
in the core's facekit.fit.partial_fc (it works with tf.distribute's replicas).
"""

from facekit import hookimpl
from facekit.declare import at_least, fraction


def softmax_head(num_classes, use_bias=True):
    """Dense layer to the classes; outputs logits (the loss applies softmax)."""
    import keras

    return keras.layers.Dense(num_classes, use_bias=use_bias, name="softmax_head")


def normdense_head(num_classes, append_norm=False, normalize_embedding=True):
    """Cosine of the L2-normalized embedding and class weights (NormDense)."""
    from facekit_plugins.heads.normdense import NormDense

    return NormDense(num_classes, normalize_embedding=normalize_embedding,
                     append_norm=append_norm, name="norm_dense")


def subcenter_head(num_classes, append_norm=False, centers=3):
    """Sub-center ArcFace: the best cosine over K centers per class."""
    from facekit_plugins.heads.normdense import SubCenterNormDense

    return SubCenterNormDense(num_classes, centers=centers, append_norm=append_norm,
                              normalize_embedding=True,
                              name="subcenter_norm_dense")


def partial_fc_head(num_classes, append_norm=False, sample_rate=0.1,
                    normalize_embedding=True):
    """Partial FC: normdense's centers sharded over replicas, a sample_rate of them per step.

    Every class of the batch is kept; the rest of each step's classes are drawn
    uniformly.  For 10^5+ identities; docs/scale.md says when to switch.
    """
    from facekit.fit.partial_fc import PartialFC

    return PartialFC(num_classes, sample_rate=sample_rate, append_norm=append_norm,
                     normalize_embedding=normalize_embedding, name="partial_fc")


@hookimpl
def facekit_register_heads(register):
    register("softmax", softmax_head, outputs="logits")
    register("normdense", normdense_head, outputs=("cosine", "cosine+norm"))
    register("subcenter", subcenter_head, outputs=("cosine", "cosine+norm"),
             checks={"centers": at_least(1)})
    register("partial-fc", partial_fc_head, outputs=("cosine", "cosine+norm"),
             checks={"sample_rate": fraction(low_open=True, high_open=False)})
