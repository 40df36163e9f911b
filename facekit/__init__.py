"""facekit: face-recognition training with TensorFlow and Keras 3.

``import facekit`` is light: the Keras-backed API (``build_model``, ``train``,
``evaluate``, ``load_model``) is imported on first use.

Examples:
    >>> import facekit
    >>> run = facekit.train(data="faces/", epochs=5)
    >>> from facekit.eval.protocols import Pairs
    >>> print(facekit.evaluate(run.run_dir, [Pairs.from_pairs("lfw/", "pairs.txt")]).table())
"""

from facekit.errors import FacekitError
from facekit.hookspecs import hookimpl

__version__ = "0.1.0"

_LAZY = {
    "build_model": "facekit.model",
    "load_model": "facekit.model",
    "train": "facekit.fit",
    "evaluate": "facekit.eval.api",
    "plan_run": "facekit.plan",
    "TrainConfig": "facekit.config",
}

__all__ = ["FacekitError", "hookimpl", "__version__", *_LAZY]


def __dir__():
    return sorted(__all__)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'facekit' has no attribute {name!r}")
