"""The hooks a facekit plugin implements.

Each hook receives a ``register`` callable, as in simonw/llm: a plugin calls it
once per component it provides.  Registration must stay cheap (no TensorFlow
or Keras import); the factories passed to ``register`` import Keras when called.
"""

import pluggy

hookspec = pluggy.HookspecMarker("facekit")
hookimpl = pluggy.HookimplMarker("facekit")


@hookspec
def facekit_register_backbones(register):
    """Register backbones: ``register(name, factory, neck=None)``.

    ``factory(input_shape, **options)`` returns a Keras model that maps raw
    pixel values in [0, 255] to a feature map (it applies its own
    preprocessing, so a saved model carries it).  ``neck`` names the neck the
    backbone's reference ends with; runs that choose no ``--neck`` use it.
    """


@hookspec
def facekit_register_necks(register):
    """Register necks: ``register(name, factory)``.

    ``factory(feature_shape, embedding_size, dropout, **options)`` returns a
    Keras model that maps the backbone's feature map (``feature_shape``, without
    the batch axis) to the embedding, before the embedding BatchNorm facekit adds.
    """


@hookspec
def facekit_register_heads(register):
    """Register heads: ``register(name, factory, outputs="logits"|"cosine")``.

    ``factory(num_classes, **options)`` returns a Keras layer that maps the
    embedding to per-class scores of the declared kind.
    """


@hookspec
def facekit_register_losses(register):
    """Register losses: ``register(name, factory, expects="logits"|"cosine")``.

    ``factory(**options)`` returns a Keras ``Loss`` that accepts integer or
    one-hot labels and scores of the declared kind.
    """


@hookspec
def facekit_register_detectors(register):
    """Register face detectors: ``register(name, factory)``.

    ``factory(**options)`` returns an object whose ``detect(images)`` takes a list of
    RGB uint8 arrays (H, W, 3) and returns, per image, a list of
    ``facekit.data.detect.Face``: a box, a confidence and five landmarks (left eye,
    right eye, nose tip, left and right mouth corner, image-left first).
    """
