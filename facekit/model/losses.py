"""The loss contracts the core relies on: margin losses, and losses that keep state.

A **margin loss** (:class:`MarginLoss`) writes logits from a head's scores:
cosines in, logits out, and the cross-entropy against the targets follows.
Writing the logits is the whole of what a margin loss does, so the same loss
serves a full head (``normdense``: every class's cosine) and the sampled
``partial-fc`` head (a target column and the sampled negatives), which calls
:meth:`MarginLoss.logits` itself.  insightface's arcface_torch hands its
``PartialFC_V2`` a margin loss the same way.

A **stateful loss** (:class:`StatefulLoss`) keeps running statistics between
steps (CurricularFace's t, AdaFace's norm statistics, dynamic AdaCos' scale).
A Keras ``Loss`` is not saved with a model, so facekit keeps these values as
weights of a pass-through :class:`LossState` layer after the head: they are in
every checkpoint, restored exactly by ``--resume``, averaged over replicas, and
carried to the next stage when the head and the state stay the same.
"""

from __future__ import annotations

import keras
from keras import ops

STATE_LAYER = "loss_state"
# Keep cosines this far inside [-1, 1]: acos' and sqrt's derivatives are infinite at
# the ends, and float32 rounding can push a cosine past them.
COSINE_EPSILON = 1e-6


def one_hot_targets(y_true, scores):
    """One-hot float32 targets from integer labels (batch,) or (batch, 1), or one-hot ones."""
    classes = scores.shape[-1]
    if len(y_true.shape) == len(scores.shape) and y_true.shape[-1] == classes and classes != 1:
        return ops.cast(y_true, "float32")
    labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
    return ops.one_hot(labels, classes, dtype="float32")


class MarginLoss(keras.losses.Loss):
    """Cross-entropy of ``logits(targets, scores, norms)`` against the targets, in float32.

    Subclasses implement :meth:`logits`; everything else is shared.  The scores are a
    head's output of the kind the loss's registration ``expects``: cosines
    (``"cosine"``), cosines followed by the embedding's L2 norm (``"cosine+norm"``, with
    ``needs_norm = True``), or plain logits (``"logits"``, softmax).

    Attributes:
        needs_norm: the scores end with the embedding norm, passed to ``logits`` and
            ``penalty`` as ``norms``.
        label_smoothing: the cross-entropy's label smoothing (partial-fc refuses it).
        num_classes: set by a head that passes a sample of the classes (partial-fc), so
            a formula that needs the number of classes reads it before
            ``scores.shape[-1]``.

    Args:
        name: the loss's name (Keras').
        **kwargs: Keras ``Loss`` arguments (``reduction``, ``dtype``).

    Examples:
        A CosFace-style loss in a third-party plugin:

        >>> class MyCosFace(MarginLoss):
        ...     def __init__(self, *, scale, margin, name="my_cosface", **kwargs):
        ...         super().__init__(name=name, **kwargs)
        ...         self.scale, self.margin = float(scale), float(margin)
        ...     def logits(self, targets, scores, norms=None):
        ...         return (scores - targets * self.margin) * self.scale
        ...     def get_config(self):
        ...         return {**super().get_config(), "scale": self.scale, "margin": self.margin}
    """

    label_smoothing = 0.0
    needs_norm = False
    num_classes = None

    def call(self, y_true, y_pred):
        scores = ops.cast(y_pred, "float32")
        norms = None
        if self.needs_norm:
            scores, norms = scores[..., :-1], scores[..., -1]
        targets = one_hot_targets(y_true, scores)
        logits = self.logits(targets, scores, norms)
        loss = keras.losses.categorical_crossentropy(
            targets, logits, from_logits=True, label_smoothing=self.label_smoothing)
        return loss if norms is None else loss + self.penalty(norms)

    def logits(self, targets, scores, norms=None):
        """The logits of ``scores`` (batch, classes) given one-hot ``targets`` and, for a
        loss that ``needs_norm``, the embedding ``norms`` (batch,)."""
        raise NotImplementedError

    def penalty(self, norms):
        """A per-sample term added to the cross-entropy (MagFace's norm regularizer)."""
        return ops.zeros_like(norms)


@keras.saving.register_keras_serializable(package="facekit")
class LossState(keras.layers.Layer):
    """Holds a loss's state as non-trainable float32 weights; returns its input.

    Args:
        initial: the state's names and starting values (``initial_state``).
    """

    def __init__(self, initial: dict, **kwargs):
        super().__init__(**kwargs)
        self.initial = {name: float(value) for name, value in initial.items()}
        self.values = {}

    def build(self, input_shape):
        for name, value in self.initial.items():
            self.values[name] = self.add_weight(
                name=name, shape=(), dtype="float32", trainable=False,
                initializer=keras.initializers.Constant(value), aggregation="mean")

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "initial": self.initial}


class StatefulLoss(keras.losses.Loss):
    """A loss with running state: ``initial_state`` names it, ``self.state`` holds it.

    Inside a facekit training model the state is the model's ``LossState``
    weights (see :func:`bind_loss_state`); used on its own, the loss creates
    its own variables on first use.  Combine it with :class:`MarginLoss`
    (``class MyLoss(StatefulLoss, MarginLoss)``) for a margin loss with state.

    Examples:
        >>> class Running(StatefulLoss, MarginLoss):
        ...     def initial_state(self, num_classes):
        ...         return {"t": 0.0}
        ...     def logits(self, targets, scores, norms=None):
        ...         t = self.state_for(scores.shape[-1])["t"]
        ...         t.assign(0.99 * t + 0.01 * ops.mean(scores))
        ...         return scores * 30.0
    """

    state = None

    def initial_state(self, num_classes: int) -> dict[str, float]:
        """The state's names and starting values for ``num_classes`` classes."""
        raise NotImplementedError

    def bind_state(self, variables: dict) -> None:
        self.state = variables

    def state_for(self, num_classes: int) -> dict:
        """The state's variables, created on first use when the loss stands alone."""
        if self.state is None:
            self.state = {name: keras.Variable(value, dtype="float32", trainable=False,
                                               name=name)
                          for name, value in self.initial_state(num_classes).items()}
        return self.state


def initial_state(loss, num_classes: int) -> dict[str, float]:
    """The state a loss keeps in the model ({} for a loss without state)."""
    return loss.initial_state(num_classes) if isinstance(loss, StatefulLoss) else {}


def bind_loss_state(model, loss) -> None:
    """Point a stateful loss at the ``LossState`` weights of ``model`` (a loss whose
    state is empty, like AdaCos with a fixed scale, needs none)."""
    if not isinstance(loss, StatefulLoss):
        return
    names = [layer.name for layer in model.layers]
    if STATE_LAYER in names:
        loss.bind_state(model.get_layer(STATE_LAYER).values)
