"""End to end: facekit.train and the CLI on a tiny generated dataset."""

import csv
import json

import numpy as np
import pytest

import facekit
from facekit.config import TrainConfig, read_config_file
from tests.conftest import TINY_TRAIN, run_facekit


@pytest.mark.parametrize("head,loss", [("softmax", "softmax"), ("normdense", "arcface"),
                                       ("normdense", "arcface-simple")])
def test_train_writes_the_run_folder(tmp_path, tiny_faces, tinynet_plugin, head, loss):
    result = facekit.train(data=str(tiny_faces), head=head, loss=loss,
                           output=str(tmp_path / "run"), val_split=0.2, **TINY_TRAIN)
    run = result.run_dir
    for name in ("basic_model.keras", "model.keras", "classes.json", "history.csv",
                 "config.toml"):
        assert (run / name).is_file(), name
    assert json.loads((run / "classes.json").read_text()) == [
        "person_000", "person_001", "person_002", "person_003"]
    config = read_config_file(run / "config.toml")
    assert (config["head"], config["loss"], config["data"]) == (head, loss, str(tiny_faces))
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    assert {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0])
    assert np.isfinite(float(rows[0]["loss"]))
    basic = facekit.load_model(run / "basic_model.keras")
    assert basic.output.shape == (None, TINY_TRAIN["embedding_size"])
    full = facekit.load_model(run / "model.keras", compile=True)
    assert full.output.shape == (None, 4)


def test_embeddings_separate_identities_in_inference_mode(tmp_path, tmp_path_factory):
    """The BatchNorm trap: training accuracy can look fine while inference-mode
    embeddings of every image collapse to one point.  After a short softmax run
    of a built-in backbone with default settings, inference-mode embeddings of
    one identity must be closer than those of different identities."""
    from facekit.data.pipeline import make_dataset
    from facekit.data.index import scan_folder
    from facekit.data.demo import write_demo_dataset

    faces = write_demo_dataset(tmp_path_factory.mktemp("faces64"), identities=4,
                               images_per_identity=10, size=64, seed=1)
    result = facekit.train(data=str(faces), backbone="mobilenetv2",
                           backbone_options={"alpha": 0.35}, head="softmax", loss="softmax",
                           image_size=64, batch_size=8, epochs=4, steps_per_epoch=10,
                           embedding_size=16, lr=0.01, val_split=0.0, verbose=0,
                           output=str(tmp_path / "run"))
    basic = facekit.load_model(result.basic_model_path)
    index = scan_folder(faces)
    images = np.concatenate([x for x, _ in make_dataset(index, image_size=64, batch_size=64,
                                                        training=False)])
    embeddings = np.array(basic.predict(images, verbose=0))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = embeddings @ embeddings.T
    same = index.labels[:, None] == index.labels[None, :]
    off_diagonal = ~np.eye(len(index), dtype=bool)
    assert similarity[off_diagonal].std() > 0.1  # not collapsed to one point
    assert similarity[same & off_diagonal].mean() > similarity[~same].mean() + 0.3


def test_train_rejects_bad_config_before_tensorflow(tiny_faces):
    # Named the way they were given: TrainConfig fields here, --flags on the command line.
    with pytest.raises(facekit.FacekitError, match="outputs logits but the loss 'arcface' "
                                                   "expects cosine; use head normdense"):
        facekit.train(TrainConfig(data=str(tiny_faces), head="softmax", loss="arcface"))
    with pytest.raises(facekit.FacekitError, match="val_split must be in"):
        facekit.train(data=str(tiny_faces), val_split=1.5)
    with pytest.raises(facekit.FacekitError, match="optimizer must be one of adamax, adam, adamw, sgd, got 'adagrad'"):
        facekit.train(data=str(tiny_faces), optimizer="adagrad")


@pytest.mark.parametrize("args,message", [
    (["--head", "softmax", "--loss", "arcface"], "expects cosine; use --head normdense"),
    (["--batch-size", "0"], "--batch-size must be in [1, 65536], got 0."),
    (["--head", "softmax", "--loss", "adaface"],
     "outputs logits but the loss 'adaface' expects cosine+norm; use --head normdense or "
     "--head partial-fc or --head subcenter with this loss."),
    (["--step-epochs", "3,x"], "--step-epochs takes whole numbers separated by commas"),
    (["--backbone", "vgg"], "Unknown backbone 'vgg'"),
    (["--neck", "max"], "Unknown neck 'max'; choose one of: e, f, flatten, gap, gdc, gnap"),
    (["--neck-opt", "width=2"],
     "The neck 'gdc' has no option 'width'; valid options: bn_momentum, pointwise, use_bias."),
    (["--pooling", "flatten"], "--pooling is now --neck: use --neck flatten."),
    (["--loss", "arcface", "--loss-opt", "margin=0.5"],
     "has no option 'margin'; valid options: margin1, margin2"),
    (["--data", "/no/such/folder"], "data folder '/no/such/folder' does not exist"),
    (["--output", __file__], f"--output '{__file__}' is a file; pass a folder"),
])
def test_cli_user_mistakes_are_one_sentence_without_traceback(args, message):
    result = run_facekit("train", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_cli_train_end_to_end(tmp_path, tiny_faces, tinynet_plugin):
    # The plugin's tiny backbone keeps this quick; test_embeddings_... trains a built-in one.
    result = run_facekit("train", "--data", str(tiny_faces), "--backbone", "tinynet",
                         "--backbone-opt", "width=8", "--head", "normdense", "--loss",
                         "arcface", "--loss-opt", "scale=16", "--image-size", "32",
                         "--batch-size", "8", "--epochs", "1", "--steps-per-epoch", "2",
                         "--augment", "light", "--no-flip", "--erasing", "0.5", "--neck", "gdc", "--neck-opt",
                         "bn_momentum=0.8", "--no-embedding-bn", "--class-balance", "0.5",
                         "--embedding-size", "16", "--output", str(tmp_path / "run"),
                         env={"PYTHONPATH": str(tinynet_plugin)})
    assert result.returncode == 0, result.stderr[-3000:]
    config = read_config_file(tmp_path / "run" / "config.toml")
    assert config["backbone_options"] == {"width": 8}
    assert config["loss_options"] == {"scale": 16.0}
    assert (config["augment"], config["flip"], config["erasing"]) == ("light", False, 0.5)
    assert (config["neck"], config["neck_options"], config["embedding_bn"]) == (
        "gdc", {"bn_momentum": 0.8}, False)
    assert config["class_balance"] == 0.5
    assert (tmp_path / "run" / "basic_model.keras").is_file()


def test_cli_help_and_version():
    result = run_facekit("train", "--help")
    assert result.returncode == 0
    for option in ("--backbone-opt", "--loss", "--val-split", "--steps-per-epoch"):
        assert option in result.stdout
    assert run_facekit("--version").stdout.strip() == f"facekit {facekit.__version__}"


def test_demo_data_is_deterministic(tmp_path):
    from facekit.data.demo import write_demo_dataset

    a = write_demo_dataset(tmp_path / "a", identities=3, images_per_identity=2, size=48, seed=5)
    b = write_demo_dataset(tmp_path / "b", identities=3, images_per_identity=2, size=48, seed=5)
    c = write_demo_dataset(tmp_path / "c", identities=3, images_per_identity=2, size=48, seed=6)
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert len(files) == 6
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)


def test_demo_data_command_and_cache(tmp_path):
    result = run_facekit("demo-data", str(tmp_path / "demo"), "--identities", "2",
                         "--images", "3", "--size", "40")
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "demo").rglob("*.jpg"))) == 6
    from facekit.data.demo import demo_dataset_dir

    first = demo_dataset_dir(identities=2, images_per_identity=2, size=40)
    stamp = (first / "person_000" / "0000.jpg").stat().st_mtime_ns
    assert demo_dataset_dir(identities=2, images_per_identity=2, size=40) == first
    assert (first / "person_000" / "0000.jpg").stat().st_mtime_ns == stamp  # reused


def test_split_by_identities_verifies_held_out_people(tmp_path, tinynet_plugin,
                                                      tmp_path_factory):
    from facekit.data.demo import write_demo_dataset

    faces = write_demo_dataset(tmp_path_factory.mktemp("people") / "faces", identities=10,
                               images_per_identity=6, size=32, seed=3)
    result = facekit.train(data=str(faces), output=str(tmp_path / "run"), head="softmax",
                           loss="softmax", split_by="identities", val_split=0.2,
                           **{**TINY_TRAIN, "augment": "strong", "epochs": 2})
    classes = json.loads((result.run_dir / "classes.json").read_text())
    assert len(classes) == 8  # two identities held out entirely
    assert len(result.history["eval/val"]) == 2 and "val_loss" not in result.history
    assert (result.run_dir / "basic_model.keras").is_file()
