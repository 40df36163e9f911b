"""Face detection and 5-point alignment on real photos (offline): the detector plugins,
prepare --detect (and its landmarks replay and resume), and detection on the way into
compare, identify, embed and eval."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import facekit
from facekit.data.align import ARCFACE_TEMPLATE, alignment_matrix
from facekit.data.detect import Face, FaceFinder
from facekit.registry import get_registry
from tests.conftest import SHARED_DATA, TINY_TRAIN, invoke_facekit, run_facekit

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the test photo")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """A real photo shipped inside scikit-image: Eileen Collins, 512x512 RGB."""
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut) -> dict:
    """Photo files: the astronaut, her mirror image, both side by side, a faceless one."""
    folder = tmp_path_factory.mktemp("photos")
    mirrored = astronaut[:, ::-1]
    files = {"astronaut": folder / "astronaut.png", "mirrored": folder / "mirrored.jpg",
             "pair": folder / "pair.png", "faceless": folder / "faceless.png"}
    Image.fromarray(astronaut).save(files["astronaut"])
    Image.fromarray(mirrored).save(files["mirrored"], quality=95)
    Image.fromarray(np.concatenate([astronaut, mirrored[::2, ::2].repeat(2, 0).repeat(2, 1)],
                                   axis=1)).save(files["pair"])
    Image.fromarray(np.full((200, 300, 3), 128, np.uint8)).save(files["faceless"])
    return files


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    """A run folder whose basic model embeds a 64x64 face as its downsampled pixels."""
    import keras

    from facekit.model import BASIC_MODEL

    run = tmp_path_factory.mktemp("model")
    model = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.AveragePooling2D(8),
                              keras.layers.Flatten(name="embedding")], name=BASIC_MODEL)
    model.save(run / "basic_model.keras")
    return run


@pytest.mark.parametrize("name", get_registry().names("detector"))
def test_each_detector_finds_the_face_with_landmarks_in_the_template_order(name, astronaut):
    faces = get_registry().get("detector", name).build().detect([astronaut])
    assert len(faces) == 1 and len(faces[0]) >= 1
    face = max(faces[0], key=lambda f: f.confidence)
    assert isinstance(face, Face) and face.confidence > 0.95
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = face.landmarks
    assert lex < nx < rex and lmx < rmx  # image-left first, as ARCFACE_TEMPLATE
    assert max(ley, rey) < ny < min(lmy, rmy)  # eyes above the nose above the mouth
    x1, y1, x2, y2 = face.box
    assert np.all((face.landmarks >= [x1, y1]) & (face.landmarks <= [x2, y2]))


def test_the_aligned_crop_puts_her_features_on_the_template(astronaut):
    finder = FaceFinder()
    [(crops, faces, reason)] = finder.aligned([Image.fromarray(astronaut)], 112)
    assert reason is None and len(crops) == 1 and crops[0].size == (112, 112)
    # The warp took her five points where the transform says (detected again in the
    # crop), and that is onto the template, up to her face's own proportions.
    matrix = alignment_matrix(faces[0].landmarks, 112)
    mapped = np.c_[faces[0].landmarks, np.ones(5)] @ matrix.T
    again = finder.find([np.asarray(crops[0])])[0].faces[0]
    assert np.abs(again.landmarks - mapped).max() < 3.0
    assert np.linalg.norm(mapped - ARCFACE_TEMPLATE, axis=1).mean() < 5.0


def test_small_unsure_and_missing_faces_are_reasons_not_crops(astronaut):
    gray = np.full((120, 160, 3), 90, np.uint8)
    found = FaceFinder(min_face_size=400).find([astronaut, gray])
    assert found[0].faces == [] and "no face of at least 400 px" in found[0].reason
    assert found[1].reason == "no face found"
    assert "confidence" in FaceFinder(min_confidence=1.0).find([astronaut])[0].reason


def test_options_are_checked_before_any_detection():
    with pytest.raises(facekit.FacekitError, match="Unknown detector 'retina'"):
        FaceFinder("retina")
    with pytest.raises(facekit.FacekitError, match="threshold_onet.*must be in"):
        FaceFinder(options=("threshold_onet=1.5",))
    with pytest.raises(facekit.FacekitError, match="--min-confidence"):
        FaceFinder(min_confidence=2.0)


def test_a_weights_file_in_the_current_folder_is_never_unpickled(tmp_path):
    # mtcnn looks for a bare weights name in the current folder first (joblib, a pickle).
    marker = tmp_path / "ran"
    bomb = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    for name in ("pnet.lz4", "rnet.lz4", "onet.lz4"):
        (tmp_path / name).write_bytes(bomb)
    subprocess.run([sys.executable, "-c", "from facekit.data.detect import FaceFinder\n"
                    "FaceFinder().model"], cwd=tmp_path, check=True, timeout=300,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True)
    assert not marker.exists()


def _source(tmp_path, photos, names=("astronaut", "mirrored", "faceless")):
    src = tmp_path / "src"
    for identity, key in zip(("eileen", "collins", "nobody"), names):
        (src / identity).mkdir(parents=True)
        (src / identity / photos[key].name).write_bytes(photos[key].read_bytes())
    return src


def _pixels(folder):
    return {str(p.relative_to(folder)): np.asarray(Image.open(p))
            for p in sorted(folder.glob("*/*.jpg"))}


def test_prepare_detect_writes_aligned_faces_lists_the_faceless_and_replays(tmp_path, photos):
    src, dst = _source(tmp_path, photos), tmp_path / "dst"
    result = run_facekit("prepare", str(src), str(dst), "--detect")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Wrote 2 images of 3 identities" in result.stdout
    assert "skipped" in result.stdout and "faceless.png: no face found" in result.stdout
    assert not (dst / "nobody" / "faceless.jpg").exists()
    crops = _pixels(dst)
    assert set(crops) == {"eileen/astronaut.jpg", "collins/mirrored.jpg"}
    assert all(crop.shape == (112, 112, 3) for crop in crops.values())
    listed = [line.split()[0] for line in (dst / "landmarks.txt").read_text().splitlines()
              if not line.startswith("#")]
    assert listed == ["collins/mirrored.jpg", "eileen/astronaut.png"]  # the source files
    manifest = json.loads((dst / ".facekit-prepare.json").read_text())
    assert manifest["alignment"]["method"] == "detect"
    # The landmarks file replays to the same crops, without a detector.
    replay = tmp_path / "replay"
    again = run_facekit("prepare", str(src), str(replay), "--landmarks",
                        str(dst / "landmarks.txt"))
    assert again.returncode == 0, again.stderr[-2000:]
    replayed = _pixels(replay)
    assert set(replayed) == set(crops)
    for name in crops:
        assert np.array_equal(replayed[name], crops[name]), name


def test_faces_all_writes_each_face_numbered_and_replays_them(tmp_path, photos):
    from facekit.data.prepare import prepare_dataset

    src = tmp_path / "src"
    (src / "crowd").mkdir(parents=True)
    (src / "crowd" / "pair.png").write_bytes(photos["pair"].read_bytes())
    report = prepare_dataset(src, tmp_path / "all", detect=FaceFinder(faces="all"),
                             progress=False)
    assert report.written == 2
    assert sorted(p.name for p in (tmp_path / "all" / "crowd").iterdir()) == [
        "pair-face2.jpg", "pair.jpg"]
    largest = prepare_dataset(src, tmp_path / "one", detect=FaceFinder(), progress=False)
    assert largest.written == 1
    assert np.array_equal(_pixels(tmp_path / "one")["crowd/pair.jpg"],
                          _pixels(tmp_path / "all")["crowd/pair.jpg"])  # largest first
    prepare_dataset(src, tmp_path / "replay", landmarks=tmp_path / "all" / "landmarks.txt",
                    progress=False)
    assert _pixels(tmp_path / "replay").keys() == _pixels(tmp_path / "all").keys()


def test_an_interrupted_prepare_continues_and_other_options_are_refused(tmp_path, photos):
    from facekit.data.prepare import prepare_dataset

    src, dst = _source(tmp_path, photos, ("astronaut", "mirrored", "astronaut")), tmp_path / "d"
    first = prepare_dataset(src, dst, detect=FaceFinder(), progress=False)
    assert first.written == 3
    # An interruption: the last face's line cut short, a half-written image left.
    landmarks = dst / "landmarks.txt"
    lines = landmarks.read_text().splitlines(keepends=True)
    landmarks.write_text("".join(lines[:-1]) + lines[-1][:30])
    last = str(Path(lines[-1].split()[0]).with_suffix(".jpg"))
    (dst / last).unlink()
    (dst / last).with_name(f".{(dst / last).name}.partial").write_bytes(b"half")
    again = prepare_dataset(src, dst, detect=FaceFinder(), progress=False)
    assert (again.already_done, again.written) == (2, 1)
    assert (dst / last).is_file() and not list(dst.glob("*/.*.partial"))
    assert len([line for line in landmarks.read_text().splitlines()
                if not line.startswith("#")]) == 3
    with pytest.raises(facekit.FacekitError, match="with other options"):
        prepare_dataset(src, dst, detect=FaceFinder(min_confidence=0.5), progress=False)
    with pytest.raises(facekit.FacekitError, match="with other options"):
        prepare_dataset(src, dst, size=64, progress=False)
    with pytest.raises(facekit.FacekitError, match="Give one of --crop, --landmarks and"):
        prepare_dataset(src, tmp_path / "x", crop=100, detect=FaceFinder(), progress=False)


def test_compare_detects_photos_and_always_prints_the_similarity(photos, embedder):
    result = run_facekit("compare", str(photos["astronaut"]), str(photos["mirrored"]),
                         "--model", str(embedder))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "faces detected (mtcnn) and aligned to 64x64" in result.stdout
    assert "similarity" in result.stdout and "no verdict" in result.stdout
    answer = json.loads(invoke_facekit("compare", photos["astronaut"], photos["mirrored"],
                                       "--model", embedder, "--json").stdout)
    assert answer["detected"] is True and answer["same"] is None
    assert answer["similarity"] > 0.95  # she, aligned, and her mirror image, aligned
    whole = json.loads(invoke_facekit("compare", photos["astronaut"], photos["pair"],
                                      "--model", embedder, "--json", "--no-detect").stdout)
    assert whole["detected"] is False and whole["similarity"] < answer["similarity"]
    faceless = run_facekit("compare", str(photos["astronaut"]), str(photos["faceless"]),
                           "--model", str(embedder))
    assert faceless.returncode == 2
    assert "No face to compare in" in faceless.stderr and "faceless.png" in faceless.stderr
    assert len(faceless.stderr.strip().splitlines()) == 1


def test_identify_and_embed_detect_and_list_the_faceless(tmp_path, photos, embedder):
    src = _source(tmp_path, photos)
    out = tmp_path / "top.csv"
    result = invoke_facekit("identify", "--gallery", src, "--probe", src, "--model",
                            embedder, "--out", out, "--no-cache")
    assert "faces detected (mtcnn)" in result.stdout
    assert "skipped" in result.stdout and "faceless.png: no face found" in result.stdout
    assert "gallery: 2 identities, 2 images" in result.stdout
    table = pd.read_csv(out)
    assert list(table["rank"]) == [1, 1]
    embedded = invoke_facekit("embed", "--model", embedder, "--data", src, "--out",
                              tmp_path / "e.npy", "--detect")
    assert "Wrote 2 embeddings" in embedded.stdout and "faceless.png" in embedded.stdout
    assert np.load(tmp_path / "e.npy").shape == (2, 192)


def test_eval_detects_and_embeds_a_faceless_pair_image_whole(tmp_path, photos, embedder):
    src = tmp_path / "lfw"
    for name, key in (("Ann", "astronaut"), ("Ann", "mirrored"), ("Bob", "faceless"),
                      ("Bob", "pair")):
        (src / name).mkdir(parents=True, exist_ok=True)
        number = len(list((src / name).iterdir())) + 1
        Image.open(photos[key]).convert("RGB").save(src / name / f"{name}_{number:04d}.jpg")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2\t1\nAnn\t1\t2\nBob\t1\t2\nAnn\t1\tBob\t1\nAnn\t2\tBob\t2\n")
    result = invoke_facekit("eval", "--model", embedder, "--data", src, "--pairs", pairs,
                            "--detect", "--report", tmp_path / "eval.json")
    assert "no face found in 1 image(s); each was used whole" in result.stdout
    assert "Bob_0001.jpg: no face found" in result.stdout
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["sets"][0]["undetected"][0][0].endswith("Bob_0001.jpg")
    with pytest.raises(facekit.FacekitError, match="needs --data"):
        from facekit.cli import evaluate

        evaluate(embedder, bins=[tmp_path / "x.bin"], detect=True)


def test_a_run_records_its_alignment_and_eval_states_it(tmp_path, photos, tinynet_plugin):
    from facekit.data.prepare import prepare_dataset

    src = tmp_path / "src"
    for identity, key in (("eileen", "astronaut"), ("collins", "mirrored")):
        (src / identity).mkdir(parents=True)
        image = Image.open(photos[key])
        for turn in range(4):  # four views of each, so both identities can train
            image.rotate(4 * turn).save(src / identity / f"{turn}.png")
    prepare_dataset(src, tmp_path / "faces", size=32, detect=FaceFinder(), progress=False)
    run = tmp_path / "run"
    facekit.train(data=str(tmp_path / "faces"), output=str(run),
                  **TINY_TRAIN)
    recorded = json.loads((run / "preprocessing.json").read_text())
    assert recorded["alignment"]["method"] == "detect"
    from facekit.data.prepare import describe_alignment
    from facekit.run_folder import trained_alignment

    assert "detected (mtcnn)" in describe_alignment(trained_alignment(run))
    evaluated = invoke_facekit("eval", "--model", run, "--data", tmp_path / "faces",
                               "--auto-pairs", "8", "--folds", "2", "--pairs-out",
                               tmp_path / "pairs.txt", "--report", tmp_path / "eval.json")
    assert "the model was trained on faces detected (mtcnn) and aligned" in evaluated.stdout
    assert "warning" not in evaluated.stdout
    cropped = tmp_path / "cropped"
    prepare_dataset(tmp_path / "faces", cropped, size=32, crop=20, progress=False)
    warned = invoke_facekit("eval", "--model", run, "--data", cropped, "--auto-pairs", "8",
                            "--folds", "2", "--pairs-out", tmp_path / "pairs2.txt",
                            "--report", tmp_path / "eval2.json")
    assert "warning: the evaluated images are a centre crop of 20 pixels" in warned.stdout
    from facekit.eval.embedding import load_embedding_model
    from facekit.eval.export import metadata

    assert metadata(run, load_embedding_model(run))["preprocessing"]["method"] == "detect"


@pytest.mark.skipif(not (SHARED_DATA / "lfw_a_subset").is_dir(),
                    reason="the shared LFW subset is not in this checkout's ../shared")
def test_prepare_detect_finds_the_faces_of_lfw(tmp_path):
    from facekit.data.prepare import prepare_dataset

    src = tmp_path / "src"
    src.mkdir()
    for name in ("Colin_Powell", "Hugo_Chavez"):
        (src / name).symlink_to(SHARED_DATA / "lfw_a_subset" / name)
    report = prepare_dataset(src, tmp_path / "dst", detect=FaceFinder(), progress=False)
    total = report.written + len(report.skipped)
    assert report.written / total >= 0.98
