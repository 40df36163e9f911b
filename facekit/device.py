"""Device setup, in one place, before anything else touches a GPU.

Memory growth on every GPU (TensorFlow otherwise takes all GPU memory up
front), the mixed-precision policy, and the distribution strategy: one
device, or MirroredStrategy over several GPUs (or the devices named by
``--devices``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from facekit.errors import FacekitError


@dataclass
class Devices:
    strategy: object  # a tf.distribute.Strategy
    replicas: int
    policy: str  # the Keras dtype policy of the run


def setup_devices(devices: str | None = None, mixed_precision: bool = False) -> Devices:
    """Memory growth, then the strategy for ``devices`` ("auto", or "gpu:0,gpu:1")."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # already initialized: the setting can no longer change
    names = _device_names(devices, gpus)
    if len(names) > 1:
        strategy = tf.distribute.MirroredStrategy(names)
    else:
        strategy = tf.distribute.get_strategy()  # the default: one device
    policy = "float32"
    if mixed_precision:  # float16 on GPUs; CPUs compute bfloat16 natively
        policy = "mixed_float16" if gpus else "mixed_bfloat16"
    return Devices(strategy, strategy.num_replicas_in_sync, policy)


def _device_names(devices: str | None, gpus) -> list[str]:
    import tensorflow as tf

    if devices in (None, "", "auto"):
        return [f"/gpu:{i}" for i in range(len(gpus))]
    names = [f"/{name.strip().lstrip('/').lower()}" for name in devices.split(",")
             if name.strip()]
    known = {d.name.lower().replace("/device:", "/").split("/", 3)[-1]
             for d in tf.config.list_logical_devices()}
    known = {f"/{name}" for name in known}
    missing = [n for n in names if n not in known]
    if missing:
        raise FacekitError(f"Unknown device(s) {', '.join(missing)}; this machine has "
                           f"{', '.join(sorted(known))}.")
    return names


@contextlib.contextmanager
def dtype_policy(policy: str):
    """Set Keras' global dtype policy for the block, then restore it."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
