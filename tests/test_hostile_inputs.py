"""Careless and hostile input (docs: "What facekit promises"; the cases of the trust
issue): one sentence and a non-zero exit, nothing the user had changed or lost, no
code run from a file."""

import hashlib
import json
import sys
import zipfile
from importlib import metadata

import pytest
from PIL import Image

from facekit.errors import FacekitError
from tests.conftest import run_facekit


def snapshot(folder):
    """Every file below ``folder`` with a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_sentence(result, *fragments):
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    for person in ("ann", "bob"):
        (folder / person).mkdir(parents=True)
        for n in range(2):
            Image.new("RGB", (40, 40), (n * 90, 20, 200)).save(folder / person / f"{n}.jpg")
    (folder / "notes.txt").write_text("mine")
    return folder


def test_demo_data_never_replaces_a_folder(photos):
    before = snapshot(photos)
    one_sentence(run_facekit("demo-data", str(photos), "--identities", "2", "--images", "2"),
                 "already exists and is not empty")
    assert snapshot(photos) == before


def test_train_never_writes_into_an_interrupted_run(tmp_path, photos):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.toml").write_text('backbone = "mobilenetv2"\n')
    (run / "checkpoints" / "epoch-0003.keras").write_bytes(b"weights")
    (run / "checkpoints" / "state.json").write_text(
        '{"epoch": 3, "checkpoint": "epoch-0003.keras"}')
    before = snapshot(run)
    one_sentence(run_facekit("train", "--data", str(photos), "--output", str(run)),
                 "already holds a run (continue it with --resume)", "--output")
    assert snapshot(run) == before


@pytest.mark.parametrize("destination", ["photos", "photos/ann", "photos/new", "elsewhere"])
def test_prepare_never_writes_over_its_source_or_into_a_full_folder(tmp_path, photos,
                                                                    destination):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep.jpg").write_bytes(b"keep")
    before, other = snapshot(photos), snapshot(tmp_path / "elsewhere")
    result = run_facekit("prepare", str(photos), str(tmp_path / destination), "--size", "32")
    one_sentence(result, "overlap" if destination != "elsewhere" else "not empty")
    assert snapshot(photos) == before and snapshot(tmp_path / "elsewhere") == other


def test_a_small_evaluation_keeps_the_thresholds_of_a_larger_one(tmp_path):
    from facekit.eval.thresholds import read_thresholds, write_thresholds

    model = tmp_path / "basic_model.keras"
    large = {"negative_pairs": 3000, "pairs": 6000, "at_far": {"1e-03": {"threshold": 0.3}}}
    small = {"negative_pairs": 10, "pairs": 20, "at_far": {"1e-03": {"threshold": None}}}
    assert write_thresholds(model, large)[1] is None
    path, kept = write_thresholds(model, small)
    assert kept == large and read_thresholds(model) == large
    larger = {**large, "negative_pairs": 4000}
    assert write_thresholds(model, larger)[1] is None and read_thresholds(model) == larger


@pytest.mark.parametrize("module", ["facekit.__main__", "facekit.cli", "os", "subprocess",
                                    "facekit_plugins._private"])
def test_a_model_file_cannot_make_facekit_import_code(tmp_path, module):
    from facekit.model.build import import_custom_objects

    path = tmp_path / "evil.keras"
    config = {"class_name": "Functional", "config": {"layers": [
        {"module": module, "class_name": "X", "registered_name": "X", "config": {}}]}}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
    loaded = set(sys.modules)
    import_custom_objects(path)
    assert module not in set(sys.modules) - loaded
    assert "facekit.__main__" not in sys.modules  # its import would run the CLI


def test_importing_facekit_main_runs_nothing():
    code = "import facekit.__main__; print('still here')"
    result = __import__("subprocess").run([sys.executable, "-c", code], capture_output=True,
                                          text=True)
    assert result.stdout.strip() == "still here", result.stderr


def test_a_plugin_that_exits_is_a_listed_problem(tmp_path, monkeypatch):
    from facekit.registry import load_registry

    (tmp_path / "exiting_plugin.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = metadata.EntryPoint("exiting", "exiting_plugin", "facekit")
    registry = load_registry([entry])
    assert [problem.error for problem in registry.problems] == ["SystemExit: 3"]


@pytest.mark.parametrize("option", ["blocks=1,2", "scale=-1"])
def test_bad_plugin_options_are_refused_before_any_data_is_read(tmp_path, option):
    result = run_facekit("train", "--data", str(tmp_path / "nowhere"), "--backbone",
                         "mobilefacenet", "--backbone-opt", option)
    one_sentence(result, "The backbone option")


def test_resume_of_a_folder_that_is_no_run_is_one_sentence(tmp_path):
    with pytest.raises(FacekitError, match="no config.toml"):
        from facekit.plan import plan_run

        plan_run(resume=tmp_path)


@pytest.mark.parametrize("args,fragment", [
    (["--image-size", "100000"], "image_size must be in [32, 1024]"),
    (["--batch-size", "10000000"], "batch_size must be in [1, 65536]"),
    (["--embedding-size", "0"], "embedding_size must be in [1, 65536]"),
])
def test_sizes_have_sane_bounds(photos, args, fragment):
    one_sentence(run_facekit("train", "--data", str(photos), *args),
                 fragment.replace("image_size", "--image-size")
                 .replace("batch_size", "--batch-size").replace("embedding_size",
                                                                "--embedding-size"))


def test_one_identity_is_refused(tmp_path):
    from facekit.data.sources import open_source

    folder = tmp_path / "one"
    (folder / "ann").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(folder / "ann" / "0.jpg")
    source = open_source(folder)
    source.index = lambda **_: __import__("facekit.data.index", fromlist=["x"]).scan_folder(
        folder)  # no TensorFlow needed to decide
    with pytest.raises(FacekitError, match="needs at least 2"):
        source.load()


def test_a_batch_the_devices_cannot_split_is_one_sentence():
    from types import SimpleNamespace

    from facekit.errors import OptionError
    from facekit.fit.run import check_sharing

    devices = SimpleNamespace(replicas=3, cluster=None)
    with pytest.raises(OptionError, match=r"cannot be split evenly over the 3 replicas on "
                                          r"this machine; use a multiple of 3 \(15 or 18\)"):
        check_sharing(None, 16, devices)
    check_sharing(None, 18, devices)


@pytest.mark.parametrize("labels,fragment", [([], "holds 0 pairs"),
                                             ([1, 1, 1], "3 of them same-person")])
def test_an_ijb_protocol_without_both_kinds_of_pairs_is_refused(tmp_path, labels, fragment):
    from facekit.eval.ijb import IJBProtocol

    meta = tmp_path / "meta"
    meta.mkdir()
    (meta / "x_face_tid_mid.txt").write_text("a.jpg 1 1\nb.jpg 2 2\n")
    (meta / "x_name_5pts_score.txt").write_text(
        "".join(f"{n} " + " ".join(["1"] * 10) + " 0.9\n" for n in ("a.jpg", "b.jpg")))
    (meta / "x_template_pair_label.txt").write_text(
        "".join(f"1 2 {label}\n" for label in labels))
    with pytest.raises(FacekitError, match=fragment):
        IJBProtocol.read(tmp_path)


def test_prepare_refuses_a_negative_crop_and_a_run_that_writes_nothing(tmp_path, photos):
    one_sentence(run_facekit("prepare", str(photos), str(tmp_path / "a"), "--crop", "-5"),
                 "--crop must be at least 1")
    broken = tmp_path / "broken"
    (broken / "ann").mkdir(parents=True)
    (broken / "ann" / "0.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    result = run_facekit("prepare", str(broken), str(tmp_path / "b"))
    assert result.returncode == 2 and "No image of" in result.stderr


def test_outputs_are_checked_before_the_work(tmp_path):
    (tmp_path / "folder.npy").mkdir()
    one_sentence(run_facekit("embed", "--model", str(tmp_path / "m.keras"), "--data",
                             str(tmp_path), "--out", str(tmp_path / "folder.npy")), "is a folder")
    one_sentence(run_facekit("export", "--model", str(tmp_path / "m.keras"), "--format",
                             "tflite", "--out", str(tmp_path / "model.bin")), "must end in .tflite")


def _bin_bomb(size: int) -> bytes:
    """A 78-byte pickle asking NumPy for an uninitialised array of ``size`` bytes."""
    n = size.to_bytes(5, "little")
    return (b"\x80\x02]cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\n\x8a\x05" + n
            + b"\x85U\x01B\x87Rq\x01ah\x01a]\x88a\x86.")


@pytest.mark.parametrize("payload,fragment", [
    (_bin_bomb(10**9), "an array in it carries no data"),
    (b"\x80\x02cnumpy\nndarray\n\x8a\x05" + (10**9).to_bytes(5, "little") + b"\x85R]\x88a\x86.",
     "not callable"),
    (None, "refer to the same data many times over"),
])
def test_a_bin_cannot_allocate_more_than_its_size(tmp_path, payload, fragment):
    import pickle
    import resource

    from facekit.eval.binfile import read_bin

    if payload is None:  # one 100 kB image referenced 2,000 times: 200 MB from 100 kB
        payload = pickle.dumps(([b"\xff" * 100_000] * 2000, [True] * 1000), protocol=4)
    path = tmp_path / "hostile.bin"
    path.write_bytes(payload)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(FacekitError, match=fragment):
        read_bin(path)
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 50_000


def test_a_bin_of_numpy_images_still_reads(tmp_path):
    import pickle

    import numpy as np

    from facekit.eval.binfile import read_bin

    image = np.frombuffer(b"\xff\xd8jpeg", np.uint8)
    path = tmp_path / "arrays.bin"
    path.write_bytes(pickle.dumps(([image, b"ab", image.copy(), b"cd"],
                                   [True, np.bool_(False)]), protocol=2))
    images, issame = read_bin(path)
    assert images == [b"\xff\xd8jpeg", b"ab", b"\xff\xd8jpeg", b"cd"]
    assert issame.tolist() == [True, False]


def test_a_model_holding_python_code_is_one_sentence(tmp_path, photos):
    import keras

    inputs = keras.Input((112, 112, 3))
    marker = tmp_path / "PWNED"
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    (tmp_path / "garbage.keras").write_bytes(b"PK\x03\x04 not really a zip")
    for name, fragment in [("lambda.keras", "holds Python code (a Lambda layer)"),
                           ("garbage.keras", "is not a Keras 3 .keras model file")]:
        result = run_facekit("embed", "--data", str(photos), "--out", str(tmp_path / "e.npy"),
                             "--model", str(tmp_path / name))
        one_sentence(result, name, fragment)
    assert not marker.exists()
