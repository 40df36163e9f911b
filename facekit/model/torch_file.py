"""PyTorch ``.pth``/``.pt`` state dicts (arcface_torch's ``backbone.pth``), read
without PyTorch and without trusting the file.

Since PyTorch 1.6 ``torch.save`` writes a zip archive: ``<name>/data.pkl`` (a
pickle of the state dict, each tensor a call to ``torch._utils._rebuild_tensor_v2``
over a storage it names by key) and ``<name>/data/<key>`` (each storage's raw
little-endian bytes).  A pickle can name any Python function to call while it
loads, so this unpickler resolves only the names a state dict of tensors needs
(``collections.OrderedDict``, the tensor rebuilders and the storage types),
each to a stand-in that builds NumPy arrays from bytes present in the archive.
Anything else — a whole pickled ``nn.Module``, an optimizer, any other
callable — is refused in one sentence before any of it runs.  An array's size
is checked against its storage's bytes before it is made, so memory stays
proportional to the file.
"""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from facekit.errors import FacekitError

# torch storage type name -> NumPy dtype (little endian)
_STORAGES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
             "BFloat16Storage": None, "LongStorage": "<i8", "IntStorage": "<i4",
             "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
             "BoolStorage": "?"}


class _StorageType:
    def __init__(self, name: str):
        self.name = name


class _Storage:
    """One storage of the archive: its bytes as a flat array of its dtype."""

    def __init__(self, array: np.ndarray):
        self.array = array


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor is not built on a storage of the file")
    if not (isinstance(offset, int) and isinstance(size, tuple) and isinstance(stride, tuple)
            and len(size) == len(stride)
            and all(type(n) is int and n >= 0 for n in (*size, *stride)) and offset >= 0):
        raise pickle.UnpicklingError("a tensor's shape or strides are not whole numbers")
    count = math.prod(size)
    if count == 0:
        return np.zeros(size, storage.array.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.array.size:
        raise pickle.UnpicklingError(f"a tensor of shape {size} reaches past its storage "
                                     f"of {storage.array.size} values")
    itemsize = storage.array.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage.array[offset:], shape=size, strides=[s * itemsize for s in stride],
        writeable=False)
    return np.array(view)  # a copy: no view into the archive's bytes


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *_ignored):
    if not isinstance(data, np.ndarray):
        raise pickle.UnpicklingError("a parameter does not hold a tensor")
    return data


def _ordered_dict(*args):
    if args:
        raise pickle.UnpicklingError("an OrderedDict is built with arguments")
    return OrderedDict()


# (module, name) a state dict may name -> what facekit gives the pickle instead.
_ALLOWED = {("collections", "OrderedDict"): _ordered_dict,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter}
_ALLOWED.update({("torch", name): _StorageType(name) for name in _STORAGES})


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.storages = archive, prefix, {}

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a state "
                                         "dict of tensors does not need") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise pickle.UnpicklingError("it refers to something other than a tensor storage")
        _, kind, key, _location, count = pid
        dtype = _STORAGES[kind.name]
        if dtype is None:
            raise pickle.UnpicklingError(f"its {kind.name} tensors are not supported; save "
                                         "the weights as float32")
        if key not in self.storages:
            try:
                raw = self.archive.read(f"{self.prefix}data/{key}")
            except KeyError:
                raise pickle.UnpicklingError(f"storage {key} is missing") from None
            array = np.frombuffer(raw, np.dtype(dtype))
            if isinstance(count, int) and array.size < count:
                raise pickle.UnpicklingError(f"storage {key} holds {array.size} of its "
                                             f"{count} values")
            self.storages[key] = _Storage(array)
        return self.storages[key]


def read_state_dict(path) -> dict[str, np.ndarray]:
    """The tensors of the PyTorch state dict saved at ``path``, as float32 or integer
    NumPy arrays by name; anything that is not a plain state dict of tensors raises
    one FacekitError naming the file."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise FacekitError(f"'{path}' is not a PyTorch checkpoint of the zip format torch.save "
                           f"writes ({error}); re-save it with torch.save(model.state_dict(), "
                           f"path).") from None
    with archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise FacekitError(f"'{path}' is a zip archive without PyTorch's data.pkl.")
        prefix = pickles[0][:-len("data.pkl")]
        try:
            state = _StateDictUnpickler(archive.read(pickles[0]), archive, prefix).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError,
                AttributeError, IndexError, zipfile.BadZipFile) as error:
            raise FacekitError(f"'{path}' is not a state dict of tensors, so facekit does not "
                               f"load it: {error}.") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a training checkpoint's weights
    if not (isinstance(state, dict) and state
            and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in state.items())):
        raise FacekitError(f"'{path}' does not hold a state dict of named tensors.")
    prefixes = ("module.", "backbone.")  # DataParallel / a wrapper's names
    for prefix in prefixes:
        if all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return {key: value.astype(np.float32) if value.dtype.kind == "f" else value
            for key, value in state.items()}
