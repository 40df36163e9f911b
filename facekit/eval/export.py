"""Export the basic (embedding) model for deployment."""

from __future__ import annotations

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
    model = load_embedding_model(model_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    size = int(model.input_shape[1])
    model(np.zeros((1, size, size, 3), "float32"))  # Keras exports only a called model
    model.export(str(out), format=_KERAS_FORMATS[fmt], verbose=False)
    return out
