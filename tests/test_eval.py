"""End to end: eval, embed, export, and verification during training, on a tiny model."""

import csv
import json
import pickle
import re

import numpy as np
import pandas as pd
import pytest

import facekit
from facekit.data.pipeline import make_dataset
from facekit.data.index import scan_folder
from facekit.eval.sets import VerificationSet, evaluate_set
from tests.conftest import TINY_TRAIN, invoke_facekit, run_facekit


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_faces, tinynet_plugin):
    run = tmp_path_factory.mktemp("eval") / "run"
    facekit.train(data=str(tiny_faces), output=str(run), head="softmax", loss="softmax",
                  **{**TINY_TRAIN, "epochs": 2, "steps_per_epoch": 5})
    return run


def test_eval_cli_auto_pairs_json_and_plot(tmp_path, trained_run, tiny_faces):
    # model.keras, the training model of the last epoch, holds the basic model too.
    result = run_facekit("eval", "--model", str(trained_run / "model.keras"),
                         "--data", str(tiny_faces), "--auto-pairs", "40", "--folds", "4", "--pairs-out",
                         str(tmp_path / "pairs.txt"), "--json", "--plot",
                         str(tmp_path / "roc.png"))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report == json.loads((trained_run / "eval.json").read_text())
    [data] = report["sets"]
    assert 0.0 <= data["accuracy"] <= 1.0
    assert len(data["fold_accuracies"]) == 4 and data["pairs"] == 40
    # 20 different-person pairs measure no FAR of 1e-2 or below: the table and the
    # thresholds say so alike.
    assert data["tar_at_far"] == {}
    assert all("cannot measure" in entry["reason"]
               for entry in report["thresholds"]["at_far"].values())
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
    again = run_facekit("eval", "--model", str(trained_run / "model.keras"), "--data",
                        str(tiny_faces), "--pairs", str(tmp_path / "pairs.txt"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"accuracy: {data['accuracy']:.4f} ± {data['accuracy_std']:.4f}" in again.stdout
    assert "TAR@FAR=1e-03: not measured" in again.stdout and "ROC AUC" in again.stdout


def test_bin_set_gives_the_same_result_as_its_pairs(tmp_path, trained_run, tiny_faces):
    model = facekit.load_model(trained_run)
    index = scan_folder(tiny_faces)
    from facekit.eval.pairs import draw_pairs, write_pairs

    write_pairs(tmp_path / "pairs.txt", draw_pairs(index, 24, folds=3, seed=1))
    by_pairs = VerificationSet.from_pairs(tiny_faces, tmp_path / "pairs.txt")
    encoded = []
    for a, b in zip(by_pairs.first, by_pairs.second):
        encoded += [open(by_pairs.images[a], "rb").read(), open(by_pairs.images[b], "rb").read()]
    with open(tmp_path / "set.bin", "wb") as f:
        pickle.dump((encoded, by_pairs.issame.tolist()), f, protocol=2)
    from_pairs, _ = evaluate_set(model, by_pairs)
    from_bin, _ = evaluate_set(model, VerificationSet.from_bin(tmp_path / "set.bin", 3))
    assert from_bin.fold_accuracies == from_pairs.fold_accuracies
    assert from_bin.auc == pytest.approx(from_pairs.auc)


def _bin_from_pairs(path, vset):
    from facekit.eval.binfile import write_bin

    encoded = []
    for a, b in zip(vset.first, vset.second):
        encoded += [open(vset.images[a], "rb").read(), open(vset.images[b], "rb").read()]
    write_bin(path, encoded, vset.issame)


def _pair_paths(folder, pairs_file):
    vset = VerificationSet.from_pairs(folder, pairs_file)
    return [(vset.images[a], vset.images[b]) for a, b in zip(vset.first, vset.second)]


def test_eval_of_several_bins_prints_one_table_and_writes_thresholds(tmp_path, trained_run,
                                                                      tiny_faces):
    from facekit.eval.pairs import draw_pairs, write_pairs

    index = scan_folder(tiny_faces)
    sets = tmp_path / "sets"
    sets.mkdir()
    for name, seed in (("lfw", 1), ("cfp_fp", 2), ("agedb_30", 3)):
        write_pairs(tmp_path / f"{name}.txt", draw_pairs(index, 100, folds=5, seed=seed))
        _bin_from_pairs(sets / f"{name}.bin",
                        VerificationSet.from_pairs(tiny_faces, tmp_path / f"{name}.txt"))
    extra = tmp_path / "mine.bin"
    _bin_from_pairs(extra, VerificationSet.from_pairs(tiny_faces, tmp_path / "lfw.txt"))
    result = run_facekit("eval", "--model", str(trained_run), "--bin", str(sets), "--bin",
                         str(extra), "--folds", "5", "--report", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split()[0] for line in result.stdout.splitlines()
            if line.split() and line.split()[0] in ("AgeDB-30", "CFP-FP", "LFW", "mine")]
    assert rows == ["AgeDB-30", "CFP-FP", "LFW", "mine"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert [s["set"] for s in report["sets"]] == rows
    lfw, mine = report["sets"][2], report["sets"][3]
    assert lfw["fold_accuracies"] == mine["fold_accuracies"]  # the same pairs
    thresholds = json.loads((trained_run / "thresholds.json").read_text())
    unique = len({tuple(sorted(pair)) for name in ("lfw", "cfp_fp", "agedb_30")
                  for pair in _pair_paths(tiny_faces, tmp_path / f"{name}.txt")})
    assert thresholds == report["thresholds"] and thresholds["pairs"] == unique  # not 400
    assert thresholds["at_far"]["1e-02"]["far"] <= 0.01  # 200 negatives measure 1e-2
    assert thresholds["at_far"]["1e-03"]["threshold"] is None


def test_similarity_thresholds_against_a_count():
    """1,000 different-person pairs at known distances: at FAR 1e-2 exactly the 10 closest
    are accepted, so the threshold is the similarity of the 11th closest."""
    from facekit.eval.thresholds import similarity_thresholds

    rng = np.random.default_rng(0)
    negatives = rng.permutation(np.linspace(0.5, 3.5, 1000))
    positives = rng.uniform(0.1, 1.5, 300)
    distances = np.concatenate([positives, negatives])
    issame = np.arange(1300) < 300
    found = similarity_thresholds(distances, issame, ["x"])["at_far"]
    eleventh = np.sort(negatives)[10]
    assert found["1e-02"]["threshold"] == pytest.approx(1 - eleventh / 2)
    assert found["1e-02"]["far"] == 0.01
    assert found["1e-02"]["tar"] == pytest.approx(np.mean(positives < eleventh))
    assert found["1e-03"]["threshold"] == pytest.approx(1 - np.sort(negatives)[1] / 2)
    assert found["1e-04"]["threshold"] is None


def test_compare_and_identify(tmp_path, trained_run, tiny_faces):
    from facekit.eval.thresholds import THRESHOLDS_FILE

    people = sorted(p for p in tiny_faces.iterdir() if p.is_dir())
    a, b = sorted(people[0].iterdir())[:2]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "basic_model.keras").write_bytes((trained_run / "basic_model.keras").read_bytes())
    # No thresholds yet: the similarity, and why there is no verdict.
    missing = run_facekit("compare", str(a), str(b), "--model", str(run_dir))
    assert missing.returncode == 0, missing.stderr[-2000:]
    assert "similarity" in missing.stdout and "no verdict" in missing.stdout
    assert "run facekit eval on it first" in missing.stdout
    (run_dir / THRESHOLDS_FILE).write_text(json.dumps({"at_far": {
        "1e-03": {"threshold": -1.0, "far": 0.001, "tar": 1.0},
        "1e-04": {"threshold": 1.0, "far": 0.0, "tar": 0.0}}}))
    answer = json.loads(invoke_facekit("compare", a, b, "--model", run_dir, "--json").stdout)
    model = facekit.load_model(run_dir)
    from facekit.eval.embedding import embed_paths
    from facekit.eval.verification import l2_normalize

    vectors = l2_normalize(embed_paths(model, [str(a), str(b)]))
    assert answer["similarity"] == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-5)
    assert answer["same"] is True  # every similarity is above -1
    strict = invoke_facekit("compare", a, b, "--model", run_dir, "--far", "1e-4")
    assert "different people" in strict.stdout  # no cosine exceeds 1
    unmeasured = invoke_facekit("compare", a, b, "--model", run_dir, "--far", "1e-2")
    assert "no verdict" in unmeasured.stdout
    assert "thresholds exist at FAR 1e-03, 1e-04 (--far)" in unmeasured.stdout

    # Gallery: the first 5 images of each person; probes: the other 5, plus a stranger.
    gallery, probes = tmp_path / "gallery", tmp_path / "probes"
    for person in people:
        for number, image in enumerate(sorted(person.iterdir())):
            folder = (gallery if number < 5 else probes) / person.name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / image.name).write_bytes(image.read_bytes())
    (probes / "stranger").mkdir()
    (probes / "stranger" / "x.jpg").write_bytes(a.read_bytes())
    out = tmp_path / "top.csv"
    first = invoke_facekit("identify", "--gallery", gallery, "--probe", probes,
                           "--model", run_dir, "--out", out, "--top", "3")
    table = pd.read_csv(out)
    assert len(table) == 21 and table["rank"].isna().sum() == 1
    # rank-k from the CSV equals what the command prints, computed independently here
    gallery_vectors = l2_normalize(embed_paths(model, [str(p) for p in sorted(gallery.glob("*/*"))]))
    templates = l2_normalize(gallery_vectors.reshape(4, 5, -1).sum(axis=1))
    enrolled = table[table["identity"] != "stranger"]
    scores = l2_normalize(embed_paths(model, enrolled["probe"].tolist())) @ templates.T
    names = [p.name for p in people]
    own = scores[np.arange(len(enrolled)), [names.index(i) for i in enrolled["identity"]]]
    expected_ranks = 1 + (scores > own[:, None]).sum(axis=1)
    assert enrolled["rank"].tolist() == expected_ranks.tolist()
    assert f"rank-1: {np.mean(expected_ranks <= 1):.4f}" in first.stdout
    assert table["match1"].tolist()[:20] == [names[i] for i in scores.argmax(axis=1)]
    again = invoke_facekit("identify", "--gallery", gallery, "--probe", probes,
                           "--model", run_dir, "--out", out, "--top", "3")
    assert "(cached embeddings)" in again.stdout and "(cached" not in first.stdout
    assert pd.read_csv(out).equals(table)

    # A probe that cannot be read is named, not dropped in silence.
    (probes / "stranger" / "broken.jpg").write_bytes(b"not a picture")
    named = invoke_facekit("identify", "--gallery", gallery, "--probe", probes,
                           "--model", run_dir, "--out", out)
    assert f"skipped {probes / 'stranger' / 'broken.jpg'}: not an image file" in named.stdout
    # A gallery image rewritten in place (same name, same folders) is embedded again,
    # and a damaged cache counts as missing.
    replaced = sorted((gallery / names[0]).iterdir())[0]
    replaced.write_bytes(a.read_bytes())
    fresh = invoke_facekit("identify", "--gallery", gallery, "--probe", probes,
                           "--model", run_dir, "--out", out)
    assert "(cached" not in fresh.stdout
    from facekit.files import cache_dir

    caches = list((cache_dir() / "gallery").glob("*.npz"))
    assert caches
    for cache in caches:
        cache.write_bytes(b"PK damaged")
    damaged = invoke_facekit("identify", "--gallery", gallery, "--probe", probes,
                             "--model", run_dir, "--out", out)
    assert "(cached" not in damaged.stdout and "rank-1" in damaged.stdout


def test_embed_to_npy_and_parquet(tmp_path, trained_run, tiny_faces):
    result = run_facekit("embed", "--model", str(trained_run), "--data", str(tiny_faces),
                         "--out", str(tmp_path / "emb.npy"))
    assert result.returncode == 0, result.stderr[-3000:]
    vectors = np.load(tmp_path / "emb.npy")
    table = pd.read_csv(tmp_path / "emb.csv")
    assert vectors.shape == (40, TINY_TRAIN["embedding_size"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert table["identity"].tolist()[:10] == ["person_000"] * 10
    result = run_facekit("embed", "--model", str(trained_run), "--data", str(tiny_faces),
                         "--out", str(tmp_path / "emb.parquet"), "--no-flip")
    assert result.returncode == 0, result.stderr[-3000:]
    frame = pd.read_parquet(tmp_path / "emb.parquet")
    assert list(frame.columns) == ["path", "identity", "embedding"] and len(frame) == 40


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite", "onnx"])
def test_export_gives_the_same_embeddings(tmp_path, trained_run, tiny_faces, fmt):
    import tensorflow as tf

    out = tmp_path / {"savedmodel": "sm", "tflite": "m.tflite", "onnx": "m.onnx"}[fmt]
    result = run_facekit("export", "--model", str(trained_run), "--format", fmt,
                         "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    from facekit.eval.export import read_metadata
    from facekit.eval.thresholds import read_thresholds

    metadata = read_metadata(out, fmt)
    assert metadata["input"]["shape"] == [None, 32, 32, 3]
    assert metadata["input"]["channels"] == "RGB" and metadata["input"]["pixel_range"] == [0, 255]
    assert metadata["output"]["embedding_size"] == TINY_TRAIN["embedding_size"]
    assert metadata["thresholds"] == read_thresholds(trained_run)
    index = scan_folder(tiny_faces)
    [(images, _)] = list(make_dataset(index.subset(np.arange(40) < 4), image_size=32,
                                      batch_size=4, training=False))
    images = images.numpy().astype("float32")
    expected = facekit.load_model(trained_run).predict(images, verbose=0)
    if fmt == "savedmodel":
        loaded = tf.saved_model.load(str(out))  # keep a reference: it owns the variables
        got = loaded.serve(images).numpy()
    elif fmt == "tflite":
        interpreter = tf.lite.Interpreter(model_path=str(out))
        detail = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(detail["index"], images.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], images)
        interpreter.invoke()
        got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out))
        assert session.get_inputs()[0].shape[0] == "batch"
        assert session.get_outputs()[0].shape[0] == "batch"
        got = session.run(None, {session.get_inputs()[0].name: images})[0]
        assert "np.object" not in result.stderr
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_verification_during_training_picks_the_best_model(tmp_path, tiny_faces,
                                                           tinynet_plugin):
    from facekit.eval.pairs import draw_pairs, write_pairs

    write_pairs(tmp_path / "faces.txt", draw_pairs(scan_folder(tiny_faces), 24, 3, seed=2))
    result = facekit.train(data=str(tiny_faces), output=str(tmp_path / "run"),
                           eval_pairs=[str(tmp_path / "faces.txt")],
                           eval_data=[str(tiny_faces)], best_by="eval/faces",
                           **{**TINY_TRAIN, "epochs": 2})
    with open(result.run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    accuracies = [float(row["eval/faces"]) for row in rows]
    assert len(accuracies) == 2 and all(0 <= a <= 1 for a in accuracies)
    assert (result.run_dir / "basic_model.keras").is_file()
    best_epoch = accuracies.index(max(accuracies)) + 1
    # the last epoch's basic model is kept apart only when it is not the best one
    assert (result.run_dir / "basic_model_last.keras").is_file() == (best_epoch != 2)
    best = facekit.load_model(result.run_dir / "basic_model.keras")
    vset = VerificationSet.from_pairs(tiny_faces, tmp_path / "faces.txt")
    assert evaluate_set(best, vset)[0].accuracy == pytest.approx(max(accuracies))


def test_bad_best_by_and_eval_arguments(tiny_faces, tmp_path):
    with pytest.raises(facekit.FacekitError, match="best_by 'eval/lfw' is not logged.*"
                                                   "val_accuracy"):
        facekit.train(data=str(tiny_faces), best_by="eval/lfw", val_split=0.2,
                      output=str(tmp_path / "r"))
    result = run_facekit("eval", "--model", str(tmp_path), "--pairs", "p.txt")
    assert result.returncode == 2
    assert "Give --data with --pairs or --auto-pairs, or --bin or --ijb alone." in result.stderr


class _Payload:
    """What a crafted .bin does on a plain pickle.load: run a command."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_crafted_bin_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.bin"
    evil.write_bytes(pickle.dumps(([_Payload(marker), b"x"], [True])))
    for command in (["eval", "--model", str(tmp_path), "--bin", str(evil)],
                    ["train", "--eval-bin", str(evil)]):
        result = run_facekit(*command)
        assert result.returncode == 2
        assert result.stderr.strip() == (
            f"Error: '{evil}' is not an insightface verification .bin: it refers to "
            "posix.system, which a verification set never holds.")
    assert not marker.exists()


@pytest.mark.parametrize("content,reason", [
    (("not", "a", "pair"), "expected a pair (images, issame)"),
    (([b"a", "text"], [True]), "its images are not a list of encoded images"),
    (([b"a", b"b"], ["yes"]), "its pair labels are not a list of true/false values"),
    (([b"a"], [True]), "it holds 1 images for 1 pairs, not two per pair"),
])
def test_bin_files_of_another_shape_are_refused(tmp_path, content, reason):
    path = tmp_path / "odd.bin"
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(facekit.FacekitError, match=re.escape(reason)):
        VerificationSet.from_bin(path)


def test_bin_files_with_numpy_contents_and_python2_strings_load(tmp_path):
    from facekit.eval.binfile import read_bin

    images = [np.frombuffer(b"jpeg-%d" % i, dtype=np.uint8) for i in range(4)]
    path = tmp_path / "np.bin"
    path.write_bytes(pickle.dumps((images, np.array([True, False])), protocol=2))
    encoded, issame = read_bin(path)
    assert encoded == [b"jpeg-0", b"jpeg-1", b"jpeg-2", b"jpeg-3"]
    assert issame.tolist() == [True, False]
    path.write_bytes(pickle.dumps(([b"a", b"b"], [np.True_]), protocol=2))
    assert read_bin(path)[1].tolist() == [True]


def test_evaluate_in_python_takes_any_protocol(tmp_path, trained_run, tiny_faces):
    from facekit.eval.pairs import draw_pairs, write_pairs
    from facekit.eval.protocols import Identification, Pairs, Protocol, Report

    write_pairs(tmp_path / "pairs.txt", draw_pairs(scan_folder(tiny_faces), 24, 3, seed=1))

    class Norms(Protocol):  # a protocol of one's own: the mean embedding norm
        name = "norms"

        def evaluate(self, model, *, flip=True, batch_size=64, progress=False):
            from facekit.eval.embedding import embed_paths

            vectors = embed_paths(model, scan_folder(tiny_faces).paths[:4], flip=flip)
            return Report(self.name, float(np.linalg.norm(vectors, axis=1).mean()), "norms")

    result = facekit.evaluate(trained_run, [Pairs.from_pairs(tiny_faces, tmp_path / "pairs.txt"),
                                            Identification(tiny_faces, tiny_faces), Norms()])
    pairs, search, norms = result.reports
    assert pairs.score == pairs.result.accuracy and pairs.to_dict()["pairs"] == 24
    assert search.kind == "identification" and search.score == search.accuracy[1]
    assert norms.score > 0 and result.thresholds["pairs"] == 24
    assert [line.split()[0] for line in result.table().splitlines() if line] == [
        "set", "pairs", "set", "faces", "set", "norms"]
    assert json.dumps(result.to_dict())  # plain JSON


def test_an_image_that_cannot_be_decoded_is_named(tmp_path, trained_run, tiny_faces):
    from facekit.eval.binfile import write_bin
    from facekit.eval.embedding import embed_encoded, embed_paths

    model = facekit.load_model(trained_run)
    good = sorted(tiny_faces.glob("*/*.jpg"))[:3]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 a JPEG header and nothing else")
    with pytest.raises(facekit.FacekitError, match=f"'{broken}' cannot be decoded as an image"):
        embed_paths(model, [str(p) for p in good] + [str(broken)], batch_size=2)
    images = [p.read_bytes() for p in good] + [b"garbage"]
    write_bin(tmp_path / "set.bin", images, [True, False])
    with pytest.raises(facekit.FacekitError, match=r"Image 3 of 'set' \(pair 2\) cannot be"):
        evaluate_set(model, VerificationSet.from_bin(tmp_path / "set.bin", 2))
    with pytest.raises(facekit.FacekitError, match=r"Image 3 of the set \(pair 2\)"):
        embed_encoded(model, images)
