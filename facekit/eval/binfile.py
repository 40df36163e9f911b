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
import math
import pickle
from pathlib import Path

import numpy as np

from facekit.errors import FacekitError

# What a pickle of bytes, booleans and NumPy arrays refers to: Python 3 writes
# bytes with protocol 2 through _codecs.encode; NumPy rebuilds arrays and
# scalars from _reconstruct/scalar (numpy.core in NumPy 1, numpy._core in 2).
# None of them is handed to the pickle itself: each name maps to a stand-in
# below that builds only data present in the file, so nothing the file holds
# can allocate more memory than the file's own size.
_CORES = ("numpy.core.multiarray", "numpy._core.multiarray")
SHARED_IMAGES = 4  # image bytes, counted per reference, may reach this many times the file
_DTYPES = {"u1", "b1", "i1", "i2", "i4", "i8"}  # images are uint8; flags bool or int


class _Unbuilt:
    """What ``_reconstruct`` returns: an array's shape and type, waiting for the
    data the pickle's next BUILD must carry (an array without it is refused)."""

    def __init__(self, budget):
        self.budget, self.array = budget, None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("an array's state is not NumPy's")
        _, shape, dtype, fortran, data = state
        if not (isinstance(dtype, np.dtype) and isinstance(data, (bytes, bytearray))
                and isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
            raise pickle.UnpicklingError("an array is not plain numbers with its data")
        if math.prod(shape) * dtype.itemsize != len(data):
            raise pickle.UnpicklingError(f"an array of shape {shape} comes with "
                                         f"{len(data)} bytes of data")
        self.array = np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")


class _NDArrayName:
    """Stands for ``numpy.ndarray`` in a pickle; calling it (an uninitialised
    array of any size) is not something a verification set needs."""


_NDARRAY = _NDArrayName()


class _Budget:
    """Bytes the pickle may create through calls, in all: the file's size."""

    def __init__(self, limit: int):
        self.left = limit

    def spend(self, n: int):
        self.left -= n
        if self.left < 0:
            raise pickle.UnpicklingError("it asks for more image data than the file holds")


class _DataOnly(pickle.Unpickler):
    def __init__(self, file, size: int):
        super().__init__(file, encoding="bytes")  # written by Python 2: str is bytes
        self.budget = _Budget(size)

    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):
            return self._encode
        if (module, name) == ("numpy", "dtype"):
            return _dtype
        if (module, name) == ("numpy", "ndarray"):
            return _NDARRAY  # only ever an argument to _reconstruct
        if module in _CORES and name == "_reconstruct":
            return self._reconstruct
        if module in _CORES and name == "scalar":
            return _scalar
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a verification "
                                     "set never holds")

    def _encode(self, text, encoding="utf-8"):
        if not (isinstance(text, str) and encoding == "latin1"):
            raise pickle.UnpicklingError("it encodes text that is not bytes")
        self.budget.spend(len(text))
        return text.encode("latin1")

    def _reconstruct(self, cls, shape, dtype):
        if cls is not _NDARRAY:
            raise pickle.UnpicklingError("it rebuilds an array of another type")
        return _Unbuilt(self.budget)


def _dtype(name, align=False, copy=True):
    if not isinstance(name, str) or name not in _DTYPES:
        raise pickle.UnpicklingError(f"it holds numbers of type {name!r}")
    return np.dtype(name)


def _scalar(dtype, data=None):
    if not (isinstance(dtype, np.dtype) and isinstance(data, bytes)
            and len(data) == dtype.itemsize):
        raise pickle.UnpicklingError("a number in it is malformed")
    return np.frombuffer(data, dtype)[0]


def _built(value):
    if isinstance(value, _Unbuilt):
        if value.array is None:
            raise pickle.UnpicklingError("an array in it carries no data")
        return value.array
    return value


def read_bin(path: str | Path) -> tuple[list[bytes], np.ndarray]:
    """(encoded images, same-identity flags) of a verification ``.bin``; image 2k and
    2k+1 form pair k.  A file of any other content gets one sentence, and no file
    makes this allocate much more than its own size."""
    path = Path(path)
    if not path.is_file():
        raise FacekitError(f"The verification file '{path}' does not exist.")

    def refuse(reason: str):
        return FacekitError(f"'{path}' is not an insightface verification .bin: {reason}.")

    raw = path.read_bytes()
    try:
        data = _DataOnly(io.BytesIO(raw), len(raw)).load()
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise refuse("expected a pair (images, issame)")
        images, issame = data
        if not isinstance(images, (list, tuple)):
            raise refuse("its images are not a list of encoded images")
        images = [_built(image) for image in images]
        issame = _built(issame)
        if isinstance(issame, (list, tuple)):
            issame = [_built(flag) for flag in issame]
    except pickle.UnpicklingError as exc:
        raise refuse(str(exc)) from None
    except FacekitError:
        raise
    except Exception as exc:  # truncated or not a pickle at all
        raise refuse(f"{type(exc).__name__}: {exc}") from None
    if not all(isinstance(image, (bytes, bytearray))
               or (isinstance(image, np.ndarray) and image.dtype == np.uint8) for image in images):
        raise refuse("its images are not a list of encoded images")
    # Every image's bytes are in the file; a pair may share an image, but references
    # to one image many times over would multiply the memory the file costs.
    if sum(len(image) if isinstance(image, (bytes, bytearray)) else image.nbytes
           for image in images) > SHARED_IMAGES * len(raw):
        raise refuse("its images refer to the same data many times over")
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
