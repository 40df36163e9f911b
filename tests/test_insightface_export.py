"""``facekit export --format onnx --insightface``: insightface's recognition convention
(NCHW RGB, (pixel - 127.5) / 127.5, one output), the reference's own embeddings, and
the round trip through ``facekit import``."""

import importlib.util

import numpy as np
import pytest

import facekit
from facekit.eval.export import export_model, read_metadata
from facekit.model.pretrained import import_model
from tests.conftest import invoke_facekit
from tests.test_import import FIXTURES, _assert_same_embeddings

pytest.importorskip("onnxruntime")


def insightface_blob(images_rgb):
    """What insightface's ArcFaceONNX.get_feat feeds the model: cv2.dnn.blobFromImages(
    BGR images, 1 / 127.5, size, (127.5,) * 3, swapRB=True), i.e. NCHW RGB scaled."""
    return ((images_rgb.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)


def insightface_routes_to_recognition(path) -> tuple[float, float]:
    """insightface's model_zoo choice for the file (ModelRouter.get_model) and the mean and
    std its ArcFaceONNX reads from the graph's first nodes; fails where it would not."""
    import onnx
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    assert len(session.get_outputs()) == 1
    assert shape[1] == 3 and shape[2] == shape[3] and shape[2] >= 112 and shape[2] % 16 == 0
    names = [node.name for node in onnx.load(str(path)).graph.node[:8]]
    mxnet = (any(n.startswith(("Sub", "_minus")) for n in names)
             and any(n.startswith(("Mul", "_mul")) for n in names))
    return (0.0, 1.0) if mxnet else (127.5, 127.5)


def run_onnx(path, blob):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: blob})[0]


@pytest.mark.parametrize("name", ["mbf-s1-b2121"])
def test_an_export_gives_the_references_embeddings_and_imports_back(tmp_path, reference,
                                                                   name):
    run = import_model(FIXTURES / f"{name}.pth", tmp_path / "run")
    out = tmp_path / "model.onnx"
    said = invoke_facekit("export", "--model", run, "--format", "onnx", "--insightface",
                          "--out", out).output
    assert "Exported onnx" in said
    assert insightface_routes_to_recognition(out) == (127.5, 127.5)
    images = reference["images"]
    exported = run_onnx(out, insightface_blob(images))
    _assert_same_embeddings(exported, reference[f"{name}/torch"])  # arcface_torch's own
    back = import_model(out, tmp_path / "back")
    again = facekit.load_model(back).predict(images.astype("float32"), verbose=0)
    _assert_same_embeddings(again, reference[f"{name}/torch"])
    meta = read_metadata(out, "onnx")
    assert meta["input"]["layout"] == "NCHW" and meta["input"]["mean"] == 127.5


def test_an_iresnet_export_is_arcface_torchs_graph_and_round_trips(tmp_path):
    import onnx

    basic, _ = facekit.build_model(2, "iresnet18", "normdense", neck="e", embedding_size=64,
                                   dropout=0.0)
    rng = np.random.default_rng(0)
    for weight in basic.weights:  # BatchNorm statistics that matter
        if "moving_variance" in weight.path:
            weight.assign(rng.uniform(0.5, 2, weight.shape).astype("float32"))
        elif "moving_mean" in weight.path:
            weight.assign(rng.normal(0, 0.1, weight.shape).astype("float32"))
    basic.save(tmp_path / "r18.keras")
    out = export_model(tmp_path / "r18.keras", "onnx", tmp_path / "r18.onnx", insightface=True)
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert ops == {"Conv", "BatchNormalization", "PRelu", "Add", "Flatten", "Gemm"}
    images = rng.uniform(0, 255, (3, 112, 112, 3)).astype("float32")
    expected = basic.predict(images, verbose=0)
    _assert_same_embeddings(run_onnx(out, insightface_blob(images)), expected)
    back = facekit.load_model(import_model(out, tmp_path / "back"))
    _assert_same_embeddings(back.predict(images, verbose=0), expected)


def test_another_backbone_exports_through_tf2onnx_with_the_same_convention(
        tmp_path, tinynet_plugin):
    pytest.importorskip("tf2onnx")
    basic, _ = facekit.build_model(2, "tinynet", "normdense", image_size=112,
                                   embedding_size=16)
    basic.save(tmp_path / "tiny.keras")
    out = export_model(tmp_path / "tiny.keras", "onnx", tmp_path / "tiny.onnx",
                       insightface=True)
    assert insightface_routes_to_recognition(out) == (127.5, 127.5)
    images = np.random.default_rng(1).uniform(0, 255, (2, 112, 112, 3)).astype("float32")
    _assert_same_embeddings(run_onnx(out, insightface_blob(images)),
                            basic.predict(images, verbose=0))


def test_a_size_insightface_cannot_take_is_refused_before_writing(tmp_path, tinynet_plugin):
    basic, _ = facekit.build_model(2, "tinynet", "normdense", image_size=150,
                                   embedding_size=16)
    basic.save(tmp_path / "m.keras")
    with pytest.raises(facekit.FacekitError, match="multiple of 16"):
        export_model(tmp_path / "m.keras", "onnx", tmp_path / "m.onnx", insightface=True)
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(facekit.FacekitError, match="--format onnx"):
        export_model(tmp_path / "m.keras", "tflite", tmp_path / "m.tflite", insightface=True)


@pytest.mark.skipif(importlib.util.find_spec("insightface") is None,
                    reason="insightface is not installed")
def test_insightface_itself_loads_an_export(tmp_path, reference):  # pragma: no cover
    from insightface.model_zoo import get_model

    run = import_model(FIXTURES / "mbf-s1-b1111.pth", tmp_path / "run")
    out = export_model(run, "onnx", tmp_path / "model.onnx", insightface=True)
    model = get_model(str(out), providers=["CPUExecutionProvider"])
    assert type(model).__name__ == "ArcFaceONNX"
    bgr = [np.ascontiguousarray(image[:, :, ::-1]) for image in reference["images"]]
    _assert_same_embeddings(model.get_feat(bgr), reference["mbf-s1-b1111/torch"])


