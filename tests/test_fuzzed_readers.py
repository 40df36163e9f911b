"""Every reader of an outside file, fed truncated, empty, garbage, wrong-type, NaN,
huge-number and huge-size content: it reads the file or refuses it with a
FacekitError naming it, and nothing else (the trust issue's "bounded, fuzzed
readers"; docs: "What facekit promises")."""

import contextlib
import json
import pickle
import resource

import numpy as np
import pytest

from facekit.errors import FacekitError

VALID_PAIRS = "2\t1\nann\t0\t1\nann\t0\tbob\t1\n"
VALID_LANDMARKS = "ann/0.jpg " + " ".join(["10"] * 10) + " 0.9\n"
VALID_STATE = json.dumps({"epoch": 2, "checkpoint": "epoch-0002.keras"})
VALID_THRESHOLDS = json.dumps({"at_far": {"1e-03": {"threshold": 0.3, "far": 1e-3}}})
VALID_META = json.dumps({"images": 2, "classes": ["a", "b"],
                         "shards": [{"file": "shard-00000-of-00001.tfrecord", "images": 2}]})
VALID_CONFIG = 'backbone = "mobilenetv2"\nepochs = 2\n'


def _mutations(valid: bytes) -> dict[str, bytes]:
    return {
        "empty": b"",
        "garbage": bytes(range(256)) * 4,
        "truncated": valid[: len(valid) // 2],
        "wrong type": b"[1, 2, 3]",
        "nan": valid.replace(b"0.3", b"NaN").replace(b"2", b"NaN"),
        "huge number": valid.replace(b"2", b"9" * 400),
        "negative": valid.replace(b"2", b"-2"),
        "text": "ünïcödé\n".encode("utf-16"),
    }


def _bin_valid() -> bytes:
    return pickle.dumps(([b"\xff\xd8a", b"\xff\xd8b"], [True]), protocol=2)


def read_bin(path):
    from facekit.eval.binfile import read_bin as reader

    reader(path)


def read_pairs(path):
    from facekit.eval.pairs import read_pairs as reader

    reader(path)


def read_landmarks(path):
    from facekit.data.align import read_landmarks as reader

    reader(path)


def read_state(path):
    from facekit.run_folder import RunFolder

    (path.parent / "checkpoints").mkdir(exist_ok=True)
    (path.parent / "checkpoints" / "state.json").write_bytes(path.read_bytes())
    RunFolder(path.parent).read_state()


def read_thresholds(path):
    from facekit.eval.thresholds import THRESHOLDS_FILE, threshold_at

    (path.parent / THRESHOLDS_FILE).write_bytes(path.read_bytes())
    (path.parent / "basic_model.keras").write_bytes(b"")
    threshold_at(path.parent, 1e-3)


def read_shard_meta(path):
    from facekit.data.shards import META_FILE, read_meta

    (path.parent / META_FILE).write_bytes(path.read_bytes())
    read_meta(path.parent)


def read_config(path):
    from facekit.config import TrainConfig, read_config_file
    from facekit.plan import plan_run

    toml = path.with_suffix(".toml")
    toml.write_bytes(path.read_bytes())
    plan_run(TrainConfig.from_dict(read_config_file(toml)), data=str(path.parent / "none"))


def read_idx(path):
    from facekit.data.recordio import REC_FILE, IDX_FILE, recordio_index

    (path.parent / IDX_FILE).write_bytes(path.read_bytes())
    (path.parent / REC_FILE).write_bytes(path.read_bytes())
    recordio_index(path.parent, use_cache=False)


def read_ijb(path):
    from facekit.eval.ijb import IJBProtocol

    meta = path.parent / "meta"
    meta.mkdir(exist_ok=True)
    for name in ("x_template_pair_label.txt", "x_face_tid_mid.txt", "x_name_5pts_score.txt"):
        (meta / name).write_bytes(path.read_bytes())
    IJBProtocol.read(path.parent)


def _keras_valid() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()  # the layout of a .keras file, with a config naming nothing real
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        archive.writestr("config.json", json.dumps({"module": "keras", "class_name": "Model",
                                                    "config": {"layers": 2}}))
        archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    return buffer.getvalue()


def read_keras(path):
    from facekit.model.build import load_model

    model = path.with_suffix(".keras")
    model.write_bytes(path.read_bytes())
    load_model(model)


def read_weights(path):
    import keras

    from facekit.model.build import init_basic_model

    weights = path.with_name("input.weights.h5")
    weights.write_bytes(path.read_bytes())
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    init_basic_model(model, weights)


READERS = [
    (read_keras, _keras_valid()),
    (read_weights, b"\x89HDF\r\n\x1a\n" + b"\x00" * 64),
    (read_bin, _bin_valid()),
    (read_pairs, VALID_PAIRS.encode()),
    (read_landmarks, VALID_LANDMARKS.encode()),
    (read_state, VALID_STATE.encode()),
    (read_thresholds, VALID_THRESHOLDS.encode()),
    (read_shard_meta, VALID_META.encode()),
    (read_config, VALID_CONFIG.encode()),
    (read_idx, b"0\t0\n1\t100\n"),
    (read_ijb, b"1 1 1\n2 2 0\n"),
]


@pytest.mark.parametrize("reader,valid", READERS, ids=[r.__name__ for r, _ in READERS])
@pytest.mark.parametrize("mutation", list(_mutations(b"")))
def test_a_bad_file_is_read_or_refused_in_one_sentence(tmp_path, reader, valid, mutation):
    path = tmp_path / "input"
    path.write_bytes(valid)
    with contextlib.suppress(FacekitError):  # warm up: the imports are not the file's
        reader(path)
    path.write_bytes(_mutations(valid)[mutation])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        reader(path)
    except FacekitError as exc:
        message = str(exc)
        assert "\n" not in message.strip() and len(message) < 2000, message
        assert "Traceback" not in message
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 200_000


def test_a_huge_landmarks_coordinate_is_refused(tmp_path):
    from facekit.data.align import read_landmarks

    path = tmp_path / "points.txt"
    path.write_text("a.jpg " + " ".join(["1e308"] * 9 + ["inf"]) + "\n")
    with pytest.raises(FacekitError, match="not finite"):
        read_landmarks(path)
    assert np.isfinite(1e308)
