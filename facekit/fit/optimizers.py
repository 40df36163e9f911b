"""Optimizers and learning-rate schedules by name."""

from __future__ import annotations

import keras

from facekit.errors import FacekitError

from facekit.config import OPTIMIZERS, SCHEDULES


@keras.saving.register_keras_serializable(package="facekit")
class EpochWise(keras.optimizers.schedules.LearningRateSchedule):
    """Hold another schedule's value constant through each epoch."""

    def __init__(self, schedule, steps_per_epoch: int):
        self.schedule = schedule
        self.steps_per_epoch = int(steps_per_epoch)

    def __call__(self, step):
        epoch_start = keras.ops.floor(keras.ops.cast(step, "float32") / self.steps_per_epoch)
        return self.schedule(epoch_start * self.steps_per_epoch)

    def get_config(self):
        return {"schedule": keras.optimizers.schedules.serialize(self.schedule),
                "steps_per_epoch": self.steps_per_epoch}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.optimizers.schedules.deserialize(config["schedule"])
        return cls(**config)


def learning_rate(schedule: str, lr: float, *, steps_per_epoch: int, epochs: int,
                  warmup_epochs: float = 0.0, decay_rate: float = 0.1,
                  step_epochs: tuple = (), per_epoch: bool = False):
    """A float (constant) or a Keras schedule over the run's steps."""
    schedules = keras.optimizers.schedules
    total = steps_per_epoch * epochs
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        warmup = int(round(warmup_epochs * steps_per_epoch))
        result = schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else lr, decay_steps=max(1, total - warmup),
            warmup_target=lr if warmup else None, warmup_steps=warmup)
    elif schedule == "exponential":  # lr * decay_rate ** epochs_done
        result = schedules.ExponentialDecay(lr, decay_steps=steps_per_epoch,
                                            decay_rate=decay_rate)
    elif schedule == "step":  # lr, then times decay_rate at each listed epoch
        if not step_epochs:
            raise FacekitError("--schedule step needs --step-epochs, e.g. 10,15.")
        boundaries = [int(e) * steps_per_epoch - 1 for e in sorted(step_epochs)]  # x > b
        values = [lr * decay_rate ** i for i in range(len(boundaries) + 1)]
        result = schedules.PiecewiseConstantDecay(boundaries, values)
    else:
        raise FacekitError(f"Unknown schedule '{schedule}'; choose one of: "
                           f"{', '.join(SCHEDULES)}.")
    return EpochWise(result, steps_per_epoch) if per_epoch else result


# The Keras class of each optimizer name (partial-fc reads it back to update its rows).
OPTIMIZER_CLASSES = {"adamax": keras.optimizers.Adamax, "adam": keras.optimizers.Adam,
                     "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD}


def make_optimizer(name: str, learning_rate, weight_decay: float | None = None,
                   ema_momentum: float | None = None):
    """A Keras optimizer by name; SGD uses momentum 0.9.  ``ema_momentum``: it also
    keeps an exponential moving average of the weights (Keras' ``use_ema``)."""
    kwargs = {"learning_rate": learning_rate}
    if weight_decay:
        kwargs["weight_decay"] = weight_decay
    if ema_momentum is not None:
        kwargs.update(use_ema=True, ema_momentum=ema_momentum)
    if name not in OPTIMIZER_CLASSES:
        raise FacekitError(f"Unknown optimizer '{name}'; choose one of: "
                           f"{', '.join(OPTIMIZERS)}.")
    if name == "sgd":
        kwargs["momentum"] = 0.9
    return OPTIMIZER_CLASSES[name](**kwargs)
