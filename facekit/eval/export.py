"""Export the basic (embedding) model for deployment, with what a deployment needs to know.

Beside the weights every export carries facekit's metadata (``metadata()``):
the input convention, the embedding size, and the similarity thresholds
``facekit eval`` measured.  Where it lives: ``assets.extra/facekit.json`` in a
SavedModel folder, the ``facekit`` entry of an ONNX model's metadata_props,
and ``<file>.json`` beside a ``.tflite`` (whose own metadata needs the
tflite-support writer).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from facekit.errors import FacekitError

FORMATS = ("savedmodel", "tflite", "onnx")
_KERAS_FORMATS = {"savedmodel": "tf_saved_model", "tflite": "litert", "onnx": "onnx"}


def export_model(model_path, fmt: str, out, insightface: bool = False) -> Path:
    """Write the embedding model as a SavedModel folder, a .tflite or an .onnx file.

    The exported model takes float32 images of raw [0, 255] pixels (batch,
    size, size, 3) and returns raw embeddings; preprocessing is inside it.
    With ``insightface`` (ONNX only) it follows insightface's recognition
    models instead (``insightface_model``).
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
    if insightface and fmt != "onnx":
        raise FacekitError("--insightface writes insightface's recognition ONNX; use it "
                           "with --format onnx.")
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
    described = metadata(model_path, model)
    if insightface:
        check_insightface_size(model, model_path)
        described["input"] = {"shape": [None, 3, size, size], **INSIGHTFACE_INPUT}
        if write_insightface_graph(model, out):  # IResNet, MobileFaceNet: arcface_torch's graph
            write_metadata(out, fmt, described)
            return out
        model = insightface_model(model)  # another network: through tf2onnx
        model(np.zeros((1, 3, size, size), "float32"))
    with warnings.catch_warnings():  # Keras' tf2onnx shim probes np.object, which warns
        warnings.filterwarnings("ignore", message=".*np.object", category=FutureWarning)
        model.export(str(out), format=_KERAS_FORMATS[fmt], verbose=False)
    write_metadata(out, fmt, described)
    return out


# insightface's recognition models: NCHW RGB, (pixel - 127.5) / 127.5.  Its
# ArcFaceONNX takes a file for one when the input is square, at least 112 and a
# multiple of 16, and its output single; it uses mean 0 and std 1 instead only
# when the graph's first nodes are named Sub and Mul (MXNet's old exports).
INSIGHTFACE_INPUT = {"layout": "NCHW", "channels": "RGB", "mean": 127.5, "std": 127.5,
                     "dtype": "float32"}


def check_insightface_size(model, model_path) -> None:
    size = int(model.input_shape[1])
    if size < 112 or size % 16:
        raise FacekitError(
            f"'{model_path}' takes {size}x{size} images; insightface takes a recognition "
            "model only at a size of at least 112 that is a multiple of 16.")


def write_insightface_graph(model, out: Path) -> bool:
    """Write ``model`` as arcface_torch's own ONNX graph (facekit.model.onnx_writer),
    through a temporary name; False when it has a layer that writer does not know."""
    import onnx

    from facekit.files import unique_temporary
    from facekit.model.onnx_writer import Unwritable, insightface_graph

    try:
        proto = insightface_graph(model)
    except Unwritable:
        return False
    with unique_temporary(out) as temporary:
        onnx.save(proto, str(temporary))
        os.replace(temporary, out)
    return True


def insightface_model(model):
    """``model`` behind insightface's input convention (``INSIGHTFACE_INPUT``), for
    tf2onnx."""
    import keras

    size = int(model.input_shape[1])
    images = keras.Input(shape=(3, size, size), name="input")
    pixels = keras.layers.Rescaling(INSIGHTFACE_INPUT["std"], offset=INSIGHTFACE_INPUT["mean"],
                                    name="to_pixels")(keras.layers.Permute(
                                        (2, 3, 1), name="to_nhwc")(images))
    return keras.Model(images, model(pixels), name="insightface_recognition")


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
        for node in proto.graph.node[:8]:  # insightface reads these names as MXNet's
            if node.name.startswith(("Sub", "_minus", "Mul", "_mul")):  # preprocessing
                node.name = "facekit_" + node.name
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
