"""arcface_torch state dicts into facekit: files made by insightface's own code
(tests/fixtures/arcface_torch/make_reference.py) give the reference's embeddings,
and a .pth holding anything but tensors is refused without running it."""

import io
import os
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import facekit
from facekit.errors import FacekitError
from tests.conftest import run_facekit

FIXTURES = Path(__file__).parent / "fixtures" / "arcface_torch"
NETWORKS = {"mbf-s1-b1111": "1,1,1,1", "mbf-s1-b2121": "2,1,2,1"}


def _normalized(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _assert_same_embeddings(got, expected):
    """Within 1e-4 as unit vectors (what verification compares), and the raw values
    within float32 rounding of their scale."""
    np.testing.assert_allclose(_normalized(got), _normalized(expected), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got, expected, atol=1e-5 * np.abs(expected).max(), rtol=0)


@pytest.mark.parametrize("name", NETWORKS)
def test_an_arcface_torch_state_dict_gives_the_references_embeddings(tmp_path, reference,
                                                                     name):
    from facekit.model.pretrained import import_model

    run = import_model(FIXTURES / f"{name}.pth", tmp_path / "run")
    config = (run / "config.toml").read_text()
    assert 'backbone = "mobilefacenet"' in config and f'blocks = "{NETWORKS[name]}"' in config
    assert "non-commercial" in config
    model = facekit.load_model(run)
    got = model.predict(reference["images"].astype("float32"), verbose=0)
    _assert_same_embeddings(got, reference[f"{name}/torch"])
    _assert_same_embeddings(got, reference[f"{name}/onnx"])  # onnxruntime on its export


def test_init_from_a_pth_takes_its_network_and_weights(tmp_path, reference, monkeypatch):
    from facekit.data.demo import write_demo_dataset

    monkeypatch.setenv("FACEKIT_CACHE", str(tmp_path / "cache"))
    data = write_demo_dataset(tmp_path / "faces", identities=3, images_per_identity=4,
                              size=112, seed=0)
    name = "mbf-s1-b2121"
    result = facekit.train(data=str(data), output=str(tmp_path / "run"),
                           init_from=str(FIXTURES / f"{name}.pth"),
                           stages=[{"epochs": 1, "frozen": "basic_model"}],
                           steps_per_epoch=1, batch_size=4, verbose=0)
    model = facekit.load_model(result.run_dir)
    _assert_same_embeddings(model.predict(reference["images"].astype("float32"), verbose=0),
                            reference[f"{name}/torch"])


def _torch_zip(path: Path, pickled: bytes, storages: dict | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/version", "3\n")
        for key, data in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", data)
    return path


class _RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pth_that_would_run_code_is_refused_without_running_it(tmp_path):
    from facekit.model.torch_file import read_state_dict

    marker = tmp_path / "ran"
    path = _torch_zip(tmp_path / "evil.pth", pickle.dumps({"w": _RunsACommand(marker)}))
    with pytest.raises(FacekitError, match="refers to (posix|os).system"):
        read_state_dict(path)
    assert not marker.exists()
    result = run_facekit("import", str(path), "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and not marker.exists()
    assert "not a state dict of tensors" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("damage, reason", [
    ("module", "refers to backbones.mobilefacenet.MobileFaceNet"),
    ("short storage", "holds .* of its"),
    ("not a zip", "not a PyTorch checkpoint"),
    ("no pickle", "without PyTorch's data.pkl")])
def test_a_pth_that_is_not_a_plain_state_dict_is_refused(tmp_path, damage, reason):
    from facekit.model.torch_file import read_state_dict

    path = tmp_path / "bad.pth"
    if damage == "module":  # torch.save(model) pickles the module's class
        _torch_zip(path, b"\x80\x02cbackbones.mobilefacenet\nMobileFaceNet\n)\x81.")
    elif damage == "short storage":
        with zipfile.ZipFile(FIXTURES / "mbf-s1-b1111.pth") as real, \
                zipfile.ZipFile(path, "w") as copy:
            for item in real.infolist():
                data = real.read(item)
                if "/data/" in item.filename and len(data) > 64:
                    data = data[:len(data) // 2]
                copy.writestr(item.filename, data)
    elif damage == "not a zip":
        path.write_bytes(b"\x80\x02}q\x00." * 10)  # a bare (legacy) pickle
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("readme.txt", "hello")
    with pytest.raises(FacekitError, match=reason) as caught:
        read_state_dict(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_state_dict_of_another_network_is_refused_in_one_sentence(tmp_path):
    from facekit.model.pretrained import import_model

    buffer = io.BytesIO()
    pickle.dump({}, buffer)
    with zipfile.ZipFile(FIXTURES / "mbf-s1-b1111.pth") as real, \
            zipfile.ZipFile(tmp_path / "other.pth", "w") as copy:
        for item in real.infolist():
            data = real.read(item)
            if item.filename.endswith("data.pkl"):  # rename every tensor
                data = data.replace(b"layers.", b"blocks.")
            copy.writestr(item.filename, data)
    with pytest.raises(FacekitError, match="neither an arcface_torch IResNet nor"):
        import_model(tmp_path / "other.pth", tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not os.environ.get("FACEKIT_INSIGHTFACE"),
                    reason="set FACEKIT_INSIGHTFACE to an insightface checkout (and install "
                           "torch) to check IResNet against arcface_torch's own code")
@pytest.mark.parametrize("depth", [18, 50])
def test_an_iresnet_from_arcface_torch_gives_its_embeddings(tmp_path, reference, depth):
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(Path(os.environ["FACEKIT_INSIGHTFACE"]) / "recognition"
                           / "arcface_torch"))
    from backbones import get_model

    sys.path.insert(0, str(FIXTURES))
    from make_reference import embed_torch, randomized

    from facekit.model.pretrained import import_model

    net = randomized(get_model(f"r{depth}", num_features=512), seed=depth)
    torch.save(net.state_dict(), tmp_path / "backbone.pth")
    run = import_model(tmp_path / "backbone.pth", tmp_path / "run")
    got = facekit.load_model(run).predict(reference["images"].astype("float32"), verbose=0)
    _assert_same_embeddings(got, embed_torch(net, reference["images"]))


@pytest.mark.parametrize("name", NETWORKS)
def test_an_insightface_onnx_gives_onnxruntimes_embeddings(tmp_path, reference, name):
    """The ONNX file torch2onnx.py's way exported (BatchNorms folded into convolutions),
    read by its structure: the embeddings onnxruntime computed on that file."""
    from facekit.model.pretrained import import_model

    run = import_model(FIXTURES / f"{name}.onnx", tmp_path / "run")
    got = facekit.load_model(run).predict(reference["images"].astype("float32"), verbose=0)
    _assert_same_embeddings(got, reference[f"{name}/onnx"])


def test_a_file_that_is_not_onnx_is_refused_in_one_sentence(tmp_path):
    from facekit.model.pretrained import import_model

    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x08\x07garbage" * 50)
    with pytest.raises(FacekitError) as caught:
        import_model(path, tmp_path / "run")
    assert str(path) in str(caught.value) and not (tmp_path / "run").exists()
