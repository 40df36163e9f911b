"""Nothing lost: exact resume, clean stops on signals, NaN never saved."""

import csv
import json
import math
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import facekit
from facekit.fit.callbacks import BestModelCheckpoint
from facekit.fit.checkpoints import EpochCheckpoint
from facekit.run_folder import RunFolder
from tests.conftest import TINY_TRAIN

# A constant rate: a cosine decay's curve depends on the total epochs, which the
# resume below raises.
EXACT = {**TINY_TRAIN, "dropout": 0.0, "augment": "none", "bn_recalibration_batches": 0,
         "deterministic": True, "val_split": 0.0, "head": "softmax", "loss": "softmax",
         "steps_per_epoch": 3, "schedule": "constant"}


def weights(path):
    return [w.numpy() for w in facekit.load_model(path, compile=True).weights]


# The stateful losses keep running statistics in the model (facekit.model.losses):
# a resume must restore them exactly too.  The softmax run also draws class-balanced
# batches, whose stream a resume must continue as well.
@pytest.mark.parametrize("head,loss,options,balance", [
    ("softmax", "softmax", {}, 1.0), ("normdense", "curricularface", {"scale": 16}, 0.0),
    ("normdense", "adaface", {"scale": 16}, 0.0), ("normdense", "adacos", {"dynamic": True}, 0.0)])
def test_two_epochs_equal_one_epoch_plus_resume(tmp_path, tiny_faces, tinynet_plugin, head,
                                                loss, options, balance):
    run = {**EXACT, "head": head, "loss": loss, "loss_options": options,
           "class_balance": balance}
    straight = facekit.train(data=str(tiny_faces), output=str(tmp_path / "a"),
                             **{**run, "epochs": 2})
    facekit.train(data=str(tiny_faces), output=str(tmp_path / "b"), **{**run, "epochs": 1})
    resumed = facekit.train(resume=tmp_path / "b", epochs=2)
    for a, b in zip(weights(straight.model_path), weights(resumed.model_path)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    model = facekit.load_model(resumed.model_path, compile=True)
    if loss != "softmax":  # the state moved away from its start, and came back whole
        state = model.get_layer("loss_state")
        assert [float(v) for v in state.get_weights()] != list(state.initial.values())
    if loss != "softmax":  # the rest is the same for every loss
        return
    with open(tmp_path / "b" / "history.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1", "2"]
    assert RunFolder(tmp_path / "b").read_state().epoch == 2
    optimizer = facekit.load_model(resumed.model_path, compile=True).optimizer
    assert int(optimizer.iterations.numpy()) == 6  # the step count carried over
    with pytest.raises(facekit.FacekitError, match="already trained 2 epoch"):
        facekit.train(resume=tmp_path / "b")


def test_sigint_stops_after_a_checkpoint_and_the_run_resumes(tmp_path, tiny_faces,
                                                             tinynet_plugin):
    import os

    env = {**os.environ, "PYTHONPATH": str(tinynet_plugin), "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = tmp_path / "run"
    command = [sys.executable, "-m", "facekit", "train", "--data", str(tiny_faces),
               "--backbone", "tinynet", "--image-size", "32", "--batch-size", "8",
               "--steps-per-epoch", "20", "--epochs", "500", "--embedding-size", "8",
               "--output", str(run)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while (RunFolder(run).read_state() is None and time.monotonic() < deadline
           and process.poll() is None):
        time.sleep(0.5)
    assert RunFolder(run).read_state() is not None, "no checkpoint appeared"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "Stopped by SIGINT" in out and f"facekit train --resume {run}" in out
    state = RunFolder(run).read_state()
    assert facekit.load_model(run / "checkpoints" / state.checkpoint) is not None
    assert not (run / "model.keras").exists()  # an interrupted run writes no final model
    result = subprocess.run([sys.executable, "-m", "facekit", "train", "--resume", str(run),
                             "--epochs", str(state.epoch + 1)], env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(run / "history.csv") as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert epochs[-1] == state.epoch + 1 and (run / "model.keras").is_file()


def test_nan_epoch_never_overwrites_checkpoint_or_best_model(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    checkpoint = EpochCheckpoint(tmp_path)
    best = BestModelCheckpoint(tmp_path / "best.keras", "val_accuracy", basic_model=model)
    for callback in (checkpoint, best):
        callback.set_model(model)
    best.on_epoch_end(0, {"val_accuracy": 0.5})
    checkpoint.on_epoch_end(0, {"loss": 1.0, "val_accuracy": 0.5})
    saved = (tmp_path / "best.keras").stat().st_mtime_ns
    best.on_epoch_end(1, {"val_accuracy": math.nan})
    checkpoint.on_epoch_end(1, {"loss": math.nan, "val_accuracy": math.nan})
    assert RunFolder(tmp_path).read_state().to_dict() == {"epoch": 1,
                                                           "checkpoint": "epoch-0001.keras"}
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "epoch-0001.keras", "state.json"]
    assert (tmp_path / "best.keras").stat().st_mtime_ns == saved


def test_nan_run_stops_without_writing_models(tmp_path, tiny_faces, tinynet_plugin, capsys):
    result = facekit.train(data=str(tiny_faces), output=str(tmp_path / "run"),
                           lr=1e38, **{**TINY_TRAIN, "epochs": 3, "verbose": 1})
    assert any(math.isnan(v) for v in result.history["loss"])
    assert "Stopped by NaN loss" in capsys.readouterr().out
    assert not (result.run_dir / "model.keras").exists()
    assert RunFolder(result.run_dir).read_state() is None


def test_history_json_plot_and_tensorboard(tmp_path, tiny_faces, tinynet_plugin):
    result = facekit.train(data=str(tiny_faces), output=str(tmp_path / "run"),
                           tensorboard=True, val_split=0.2, **{**TINY_TRAIN, "epochs": 2})
    rows = json.loads((result.run_dir / "history.json").read_text())
    assert [row["epoch"] for row in rows] == [1, 2]  # as the console counts them
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0])
    assert (result.run_dir / "training.png").read_bytes()[:4] == b"\x89PNG"
    assert any((result.run_dir / "tensorboard").rglob("events.out.tfevents.*"))


def test_a_nan_in_the_last_epoch_saves_no_model_and_says_so(tmp_path, tiny_faces,
                                                            tinynet_plugin):
    result = facekit.train(data=str(tiny_faces), output=str(tmp_path / "run"),
                           lr=1e38, **TINY_TRAIN)  # one epoch: the last one diverges
    assert result.stopped == "NaN loss"
    assert not any((tmp_path / "run").glob("*.keras"))


def test_a_run_stopped_after_its_last_checkpoint_resumes_to_its_final_models(
        tmp_path, tiny_faces, tinynet_plugin, capsys):
    run = RunFolder(tmp_path / "run")
    facekit.train(data=str(tiny_faces), output=str(run.path), **{**EXACT, "epochs": 2})
    final = weights(run.model)
    for path in run.path.glob("*.keras"):  # as if Ctrl-C came before the final models
        path.unlink()
    facekit.train(resume=run.path, verbose=1)
    assert "wrote the final models from the last checkpoint" in capsys.readouterr().out
    for a, b in zip(final, weights(run.model)):
        np.testing.assert_array_equal(a, b)
    assert run.basic_model.is_file()


def test_a_damaged_last_checkpoint_resumes_from_the_one_before(tmp_path, tiny_faces,
                                                               tinynet_plugin, capsys):
    class StopAfterTwo(keras.callbacks.Callback):  # an unfinished run keeps its checkpoints
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = epoch == 1

    run = RunFolder(tmp_path / "run")
    facekit.train(data=str(tiny_faces), output=str(run.path), **{**EXACT, "epochs": 3},
                  callbacks=[StopAfterTwo()])
    assert [epoch for epoch, _ in run.saved_checkpoints()] == [2, 1]
    with open(run.history_csv, "a") as f:  # the partial row an interrupted epoch leaves
        f.write("2,9.9,0.1\n")
    run.checkpoint(2).write_bytes(b"PK\x03\x04 cut short")
    config = run.config.read_bytes()
    facekit.train(resume=run.path, epochs=3, verbose=1)
    assert "Resuming from the intact epoch-0001.keras instead (epoch 1)" in (
        capsys.readouterr().out)
    with open(run.history_csv) as f:  # each epoch once, the redone ones replaced
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1", "2", "3"]
    assert run.read_state().epoch == 3 and run.model.is_file()
    assert b"epochs = 3" in run.config.read_bytes() and config != run.config.read_bytes()


def test_a_resume_that_cannot_load_changes_nothing(tmp_path, tiny_faces, tinynet_plugin):
    run = RunFolder(tmp_path / "run")
    facekit.train(data=str(tiny_faces), output=str(run.path),
                  **{**EXACT, "epochs": 1})
    run.checkpoint(1).write_bytes(b"PK\x03\x04 cut short")
    before = {p.name: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}
    with pytest.raises(facekit.FacekitError, match="epoch-0001.keras"):
        facekit.train(resume=run.path, epochs=2)
    assert {p.name: p.read_bytes() for p in run.path.rglob("*") if p.is_file()} == before


def test_resume_refuses_a_config_edited_to_another_network(tmp_path, tiny_faces,
                                                           tinynet_plugin):
    run = RunFolder(tmp_path / "run")
    facekit.train(data=str(tiny_faces), output=str(run.path), **{**EXACT, "epochs": 1})
    assert run.read_state().model["backbone"] == "tinynet"
    run.config.write_text(run.config.read_text().replace('backbone = "tinynet"',
                                                         'backbone = "resnet50"'))
    with pytest.raises(facekit.FacekitError, match="checkpoints hold a network with backbone"):
        facekit.train(resume=run.path, epochs=2)
