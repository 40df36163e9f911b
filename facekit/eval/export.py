"""Export the basic (embedding) model for deployment, with what a deployment needs to know.

Beside the weights every export carries facekit's metadata (``metadata()``):
the input convention, the embedding size, and the similarity thresholds
``facekit eval`` measured.  Where it lives: ``assets.extra/facekit.json`` in a
SavedModel folder, the ``facekit`` entry of an ONNX model's metadata_props,
and ``<file>.json`` beside a ``.tflite`` (whose own metadata needs the
tflite-support writer).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from facekit.errors import FacekitError

FORMATS = ("savedmodel", "tflite", "onnx")
_KERAS_FORMATS = {"savedmodel": "tf_saved_model", "tflite": "litert", "onnx": "onnx"}


def export_model(model_path, fmt: str, out) -> Path:
    """Write the embedding model as a SavedModel folder, a .tflite or an .onnx file.

    The exported model takes float32 images of raw [0, 255] pixels (batch,
    size, size, 3) and returns raw embeddings; preprocessing is inside it.
    """
    import numpy as np

    from facekit.eval.embedding import load_embedding_model

    if fmt not in FORMATS:
        raise FacekitError(f"Unknown export format '{fmt}'; choose one of: {', '.join(FORMATS)}.")
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
            import tf2onnx  # noqa: F401
        except ImportError:
            raise FacekitError("ONNX export needs tf2onnx and onnx; install them with "
                               "pip install 'facekit[onnx]'.") from None
    out = Path(out)
    if fmt == "savedmodel" and out.exists() and not out.is_dir():
        raise FacekitError(f"--out '{out}' is a file; a SavedModel is a folder.")
    if fmt != "savedmodel" and out.is_dir():
        raise FacekitError(f"--out '{out}' is a folder; name the .{fmt} file.")
    if fmt != "savedmodel" and out.suffix != f".{fmt}":
        raise FacekitError(f"--out '{out}' must end in .{fmt}.")
    model = load_embedding_model(model_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    size = int(model.input_shape[1])
    model(np.zeros((1, size, size, 3), "float32"))  # Keras exports only a called model
    with warnings.catch_warnings():  # Keras' tf2onnx shim probes np.object, which warns
        warnings.filterwarnings("ignore", message=".*np.object", category=FutureWarning)
        model.export(str(out), format=_KERAS_FORMATS[fmt], verbose=False)
    write_metadata(out, fmt, metadata(model_path, model))
    return out


METADATA_FILE = "facekit.json"


def metadata(model_path, model) -> dict:
    """What an exported model's user needs besides the weights."""
    from facekit import __version__
    from facekit.eval.thresholds import INPUT_CONVENTION, read_thresholds
    from facekit.run_folder import trained_alignment

    size = int(model.input_shape[1])
    return {"facekit_version": __version__,
            "input": {"shape": [None, size, size, 3], **INPUT_CONVENTION},
            # how facekit prepare made the training images (None when it did not)
            "preprocessing": trained_alignment(model_path),
            "output": {"embedding_size": int(model.output_shape[-1]),
                       "compare": "L2-normalize, then cosine similarity"},
            "thresholds": read_thresholds(model_path)}


def write_metadata(out: Path, fmt: str, data: dict) -> None:
    import json

    text = json.dumps(data, indent=2)
    if fmt == "savedmodel":
        (out / "assets.extra").mkdir(exist_ok=True)
        (out / "assets.extra" / METADATA_FILE).write_text(text + "\n")
    elif fmt == "onnx":
        import onnx

        proto = onnx.load(str(out))
        for value in [*proto.graph.input, *proto.graph.output]:  # not tf2onnx's "unk__694"
            dims = value.type.tensor_type.shape.dim
            if dims and dims[0].dim_param:
                dims[0].dim_param = "batch"
        entry = next((p for p in proto.metadata_props if p.key == "facekit"), None) \
            or proto.metadata_props.add()
        entry.key, entry.value = "facekit", text
        onnx.save(proto, str(out))
    else:
        out.with_name(out.name + ".json").write_text(text + "\n")


def read_metadata(out, fmt: str) -> dict:
    """The facekit metadata of an exported model (for tests and deployment code)."""
    import json

    out = Path(out)
    if fmt == "savedmodel":
        return json.loads((out / "assets.extra" / METADATA_FILE).read_text())
    if fmt == "onnx":
        import onnx

        return json.loads(next(p.value for p in onnx.load(str(out)).metadata_props
                               if p.key == "facekit"))
    return json.loads(out.with_name(out.name + ".json").read_text())
