"""Loss state kept in the training model: running statistics that survive a resume.

Some losses keep statistics between steps (CurricularFace's t, AdaFace's
running mean and deviation of embedding norms, dynamic AdaCos' scale).  A
Keras ``Loss`` object is not saved with a model, so facekit keeps these values
as weights of a pass-through ``LossState`` layer after the head: they are in
every checkpoint, restored exactly by ``--resume``, averaged over replicas, and
carried to the next stage when the head and the state stay the same.

A loss takes part by subclassing :class:`StatefulLoss`: it declares
``initial_state(num_classes)`` and reads and assigns ``self.state[name]``.
"""

from __future__ import annotations

import keras

STATE_LAYER = "loss_state"


@keras.saving.register_keras_serializable(package="facekit")
class LossState(keras.layers.Layer):
    """Holds a loss's state as non-trainable float32 weights; returns its input."""

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
    its own variables on first use.
    """

    state = None

    def initial_state(self, num_classes: int) -> dict[str, float]:
        raise NotImplementedError

    def bind_state(self, variables: dict) -> None:
        self.state = variables

    def state_for(self, num_classes: int) -> dict:
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
