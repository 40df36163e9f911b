"""facekit: face-recognition training with TensorFlow and Keras 3.

``import facekit`` is light: the Keras-backed API (``build_model``, ``train``,
``load_model``) is imported on first use.
"""

from facekit.errors import FacekitError
from facekit.hookspecs import hookimpl

__version__ = "0.1.0"

_LAZY = {
    "build_model": "facekit.model",
    "load_model": "facekit.model",
    "train": "facekit.fit",
    "TrainConfig": "facekit.config",
}

__all__ = ["FacekitError", "hookimpl", "__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'facekit' has no attribute {name!r}")
