"""Device setup, done once before anything else touches a GPU."""

from __future__ import annotations


def setup_devices() -> list:
    """Turn on memory growth on every GPU (as the design notes do) and list them.

    TensorFlow otherwise reserves all GPU memory up front.  Memory growth can
    only be set before a GPU is initialized, so a GPU already in use is left
    as it is.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # already initialized: the setting can no longer change
    return gpus
