"""Built-in heads: the layer between the embedding and the loss."""

from facekit import hookimpl


def softmax_head(num_classes, use_bias=True):
    """Dense layer to the classes; outputs logits (the loss applies softmax)."""
    import keras

    return keras.layers.Dense(num_classes, use_bias=use_bias, name="softmax_head")


def normdense_head(num_classes, append_norm=False, normalize_embedding=True):
    """Cosine of the L2-normalized embedding and class weights (NormDense)."""
    from facekit_plugins.keras_layers import NormDense

    return NormDense(num_classes, normalize_embedding=normalize_embedding,
                     append_norm=append_norm, name="norm_dense")


def subcenter_head(num_classes, append_norm=False, centers=3):
    """Sub-center ArcFace: the best cosine over K centers per class."""
    from facekit_plugins.keras_layers import SubCenterNormDense

    return SubCenterNormDense(num_classes, centers=centers, append_norm=append_norm,
                              name="subcenter_norm_dense")


@hookimpl
def facekit_register_heads(register):
    register("softmax", softmax_head, outputs="logits")
    register("normdense", normdense_head, outputs=("cosine", "cosine+norm"))
    register("subcenter", subcenter_head, outputs=("cosine", "cosine+norm"))
