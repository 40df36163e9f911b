"""insightface verification ``.bin`` files, read without trusting them.

A ``.bin`` (lfw.bin, cfp_fp.bin, agedb_30.bin, ...) is a pickle of
``(images, issame)``: the encoded images (bytes; NumPy uint8 arrays in some
conversions) and one boolean per pair.  A pickle can name any Python function
to call while it loads, so these files are read with an unpickler that
resolves only the few NumPy and codec names such data needs, and the result
is checked for exactly that shape.  Anything else is refused before any of
its code can run.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from facekit.errors import FacekitError

# What a pickle of bytes, booleans and NumPy arrays refers to: Python 3 writes
# bytes with protocol 2 through _codecs.encode; NumPy rebuilds arrays and
# scalars from these (numpy.core in NumPy 1, numpy._core in NumPy 2).
_ALLOWED = {("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype")} | {
    (f"numpy.{core}.multiarray", name)
    for core in ("core", "_core") for name in ("_reconstruct", "scalar")}


class _DataOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a verification "
                                     "set never holds")


def read_bin(path: str | Path) -> tuple[list[bytes], np.ndarray]:
    """(encoded images, same-identity flags) of a verification ``.bin``; image 2k and
    2k+1 form pair k.  A file of any other content gets one sentence."""
    path = Path(path)
    if not path.is_file():
        raise FacekitError(f"The verification file '{path}' does not exist.")

    def refuse(reason: str):
        return FacekitError(f"'{path}' is not an insightface verification .bin: {reason}.")

    try:
        # Written by Python 2, hence encoding="bytes" for its str objects.
        data = _DataOnly(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise refuse(str(exc)) from None
    except Exception as exc:  # truncated or not a pickle at all
        raise refuse(f"{type(exc).__name__}: {exc}") from None
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise refuse("expected a pair (images, issame)")
    images, issame = data
    if not (isinstance(images, (list, tuple)) and all(
            isinstance(image, (bytes, bytearray))
            or (isinstance(image, np.ndarray) and image.dtype == np.uint8) for image in images)):
        raise refuse("its images are not a list of encoded images")
    flags = np.asarray(issame) if isinstance(issame, (list, tuple, np.ndarray)) else None
    if flags is None or flags.ndim != 1 or not (
            flags.dtype == bool or all(isinstance(flag, (bool, np.bool_)) for flag in issame)):
        raise refuse("its pair labels are not a list of true/false values")
    if len(images) != 2 * len(flags):
        raise refuse(f"it holds {len(images)} images for {len(flags)} pairs, not two per pair")
    return [bytes(image) if isinstance(image, (bytes, bytearray)) else image.tobytes()
            for image in images], flags.astype(bool)


def write_bin(path: str | Path, images: list[bytes], issame) -> None:
    """Write a verification set as insightface does: a pickle (protocol 2) of the
    encoded images, two per pair, and the same-identity flags."""
    flags = [bool(flag) for flag in issame]
    if len(images) != 2 * len(flags):
        raise ValueError(f"{len(images)} images for {len(flags)} pairs: two per pair")
    with open(path, "wb") as f:
        pickle.dump(([bytes(image) for image in images], flags), f, protocol=2)
