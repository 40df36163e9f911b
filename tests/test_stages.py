"""Staged training: --init-from, frozen epochs and run.toml stages, resumable."""

import csv
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

import facekit
from facekit.run_folder import RunFolder
from facekit.config import TrainConfig, read_config_file
from facekit.errors import FacekitError
from tests.conftest import TINY_TRAIN, run_facekit

THREE_STAGES = """
backbone = "tinynet"
image-size = 32
batch_size = 8
steps_per_epoch = 3
embedding_size = 16
bn_recalibration_batches = 2
val_split = 0.0
deterministic = true
verbose = 0

[[stages]]  # softmax from scratch
head = "softmax"
loss = "softmax"
epochs = 1

[[stages]]  # a new ArcFace head on the frozen basic model
head = "normdense"
loss = "arcface"
frozen = "basic_model"
epochs = 1

[[stages]]  # everything trains
head = "normdense"
loss = "arcface"
optimizer = "adam"
lr = 0.0005
epochs = 1
"""


class WeightRecorder(keras.callbacks.Callback):
    """Basic-model and head weights at the start and end of each stage's fit."""

    def __init__(self):
        super().__init__()
        self.stages = []

    def _weights(self):
        return {"basic": [np.array(w) for w in self.model.get_layer("basic_model").get_weights()],
                "head": [np.array(w) for w in self.model.layers[-1].get_weights()]}

    def on_train_begin(self, logs=None):
        self.stages.append({"begin": self._weights()})

    def on_train_end(self, logs=None):
        self.stages[-1]["end"] = self._weights()


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def _history(run):
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


def test_three_stage_config_freezes_only_where_asked(tmp_path, tiny_faces, tinynet_plugin):
    config_file = tmp_path / "run.toml"
    config_file.write_text(f'data = "{tiny_faces}"\n' + THREE_STAGES)
    recorder = WeightRecorder()
    config = TrainConfig.from_dict(read_config_file(config_file))
    result = facekit.train(config, output=str(tmp_path / "run"), callbacks=[recorder])
    softmax, frozen, unfrozen = recorder.stages

    assert not _same(softmax["begin"]["basic"], softmax["end"]["basic"])
    # The frozen stage starts from the softmax stage's basic model, trains a new
    # head and leaves every basic-model weight (BatchNorm statistics too) as it was.
    assert _same(frozen["begin"]["basic"], softmax["end"]["basic"])
    assert _same(frozen["end"]["basic"], frozen["begin"]["basic"])
    assert frozen["begin"]["head"][0].shape != softmax["end"]["head"][0].shape or not _same(
        frozen["begin"]["head"], softmax["end"]["head"])
    assert not _same(frozen["end"]["head"], frozen["begin"]["head"])
    # The last stage keeps the ArcFace head and, unfrozen, trains the basic model.
    assert _same(unfrozen["begin"]["head"], frozen["end"]["head"])
    assert not _same(unfrozen["end"]["basic"], unfrozen["begin"]["basic"])

    run = result.run_dir
    assert [int(row["stage"]) for row in _history(run)] == [1, 2, 3]
    assert RunFolder(run).read_state().stage == 3
    assert (run / "training.png").is_file()
    saved = read_config_file(run / "config.toml")
    assert [s["loss"] for s in saved["stages"]] == ["softmax", "arcface", "arcface"]
    final = facekit.load_model(run / "model.keras")
    assert _same(final.get_layer("basic_model").get_weights(), unfrozen["end"]["basic"])

    # The saved config.toml reproduces the run (the command line only names a new folder).
    again = run_facekit("train", "--config", str(run / "config.toml"),
                        "--output", str(tmp_path / "again"),
                        env={"PYTHONPATH": str(tinynet_plugin)})
    assert again.returncode == 0, again.stderr[-2000:]
    assert [row["loss"] for row in _history(tmp_path / "again")] == [
        row["loss"] for row in _history(run)]


def test_init_from_a_run_with_frozen_epochs(tmp_path, tiny_faces, tinynet_plugin):
    first = facekit.train(data=str(tiny_faces), head="softmax", loss="softmax",
                          output=str(tmp_path / "first"), val_split=0.0, **TINY_TRAIN)
    trained = facekit.load_model(first.run_dir).get_weights()
    recorder = WeightRecorder()
    facekit.train(data=str(tiny_faces), init_from=str(first.run_dir),
                  output=str(tmp_path / "second"), val_split=0.0, callbacks=[recorder],
                  **{**TINY_TRAIN, "epochs": 2}, freeze_basic_model_epochs=1)
    frozen, unfrozen = recorder.stages
    assert _same(frozen["begin"]["basic"], trained)
    assert _same(frozen["end"]["basic"], trained)
    assert not _same(unfrozen["end"]["basic"], trained)

    weights_file = tmp_path / "basic.weights.h5"
    facekit.load_model(first.run_dir).save_weights(weights_file)
    probe = facekit.train(data=str(tiny_faces), init_from=str(weights_file), frozen="backbone",
                          output=str(tmp_path / "third"), val_split=0.0, **TINY_TRAIN)
    backbone = facekit.load_model(probe.run_dir / "basic_model.keras").get_layer("backbone")
    assert _same(backbone.get_weights(),
                 facekit.load_model(first.run_dir).get_layer("backbone").get_weights())


def test_init_from_a_different_architecture_is_refused(tmp_path, tiny_faces, tinynet_plugin):
    first = facekit.train(data=str(tiny_faces), output=str(tmp_path / "first"),
                          val_split=0.0, **TINY_TRAIN)
    with pytest.raises(FacekitError, match="do not fit this run's basic model"):
        facekit.train(data=str(tiny_faces), init_from=str(first.run_dir),
                      output=str(tmp_path / "second"), val_split=0.0,
                      **{**TINY_TRAIN, "embedding_size": 8})


class InterruptAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            os.kill(os.getpid(), signal.SIGINT)


def test_resume_between_stages(tmp_path, tiny_faces, tinynet_plugin):
    staged = dict(TINY_TRAIN, epochs=2, head="softmax", loss="softmax", val_split=0.0,
                  stages=[{"epochs": 1}, {"head": "normdense", "loss": "arcface",
                                          "frozen": "basic_model", "epochs": 1}])
    first = facekit.train(output=str(tmp_path / "run"), data=str(tiny_faces),
                          callbacks=[InterruptAfterFirstEpoch()], **staged)
    assert first.interrupted == "SIGINT"
    state = RunFolder(first.run_dir).read_state().to_dict()
    assert state.pop("model")["backbone"] == "tinynet"
    assert state == {"epoch": 1, "checkpoint": "epoch-0001.keras", "stage": 1}
    resumed = facekit.train(resume=first.run_dir)
    assert resumed.interrupted is None
    assert [int(row["stage"]) for row in _history(first.run_dir)] == [1, 2]
    model = facekit.load_model(first.run_dir / "model.keras")
    assert model.layers[-1].__class__.__name__ == "NormDense"


@pytest.mark.parametrize("stage,message", [
    ('batch_size = 4', "Stage 1 sets batch_size, which cannot change between stages"),
    ('epochs = 2\nfreeze_backbone_epochs = 2', "freeze_backbone_epochs (2) must be less than epochs (2)"),
    ('loss = "arcface"\nhead = "softmax"', "expects cosine"),
])
def test_bad_stages_are_refused_before_training(tmp_path, stage, message):
    config_file = tmp_path / "run.toml"
    config_file.write_text(f"[[stages]]\n{stage}\n")
    result = run_facekit("train", "--config", str(config_file))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_command_line_overrides_the_config_file_in_every_stage():
    config = TrainConfig(stages=[{"epochs": 3, "lr": 0.1}, {"epochs": 4}])
    overridden = config.with_overrides(epochs=1, batch_size=4)
    assert overridden.batch_size == 4
    assert [s.epochs for s in overridden.stage_configs()] == [1, 1]
    assert [s.lr for s in overridden.stage_configs()] == [0.1, None]


def test_freeze_epochs_split_a_stage():
    stages = TrainConfig(epochs=5, freeze_backbone_epochs=2).stage_configs()
    assert [(s.epochs, s.frozen) for s in stages] == [(2, "backbone"), (3, "none")]
    assert TrainConfig(epochs=5, freeze_backbone_epochs=2).total_epochs == 5


class StateRecorder(keras.callbacks.Callback):
    """The loss state and head kernel at the start and end of each stage's fit."""

    def __init__(self):
        super().__init__()
        self.stages = []

    def _now(self):
        from facekit.model import head_layer

        names = [layer.name for layer in self.model.layers]
        state = (self.model.get_layer("loss_state").get_weights()
                 if "loss_state" in names else [])
        return {"state": [float(v) for v in state],
                "head": np.array(head_layer(self.model).get_weights()[0]),
                "width": self.model.output_shape[-1]}

    def on_train_begin(self, logs=None):
        self.stages.append({"begin": self._now()})

    def on_train_end(self, logs=None):
        self.stages[-1]["end"] = self._now()


def test_loss_state_and_head_carry_between_stages(tmp_path, tiny_faces, tinynet_plugin):
    """CurricularFace's t carries into the next stage that keeps head and loss; a head
    that must now append the embedding norm (AdaFace) keeps its class centers; and the
    model with its loss state loads in a fresh process."""
    recorder = StateRecorder()
    stages = [{"loss": "curricularface", "frozen": "basic_model", "epochs": 1},
              {"loss": "curricularface", "epochs": 1},
              {"loss": "adaface", "epochs": 1}]
    result = facekit.train(data=str(tiny_faces), output=str(tmp_path / "run"),
                           callbacks=[recorder],
                           **{**TINY_TRAIN, "head": "subcenter", "val_split": 0.0,
                              "stages": stages, "loss_options": {"scale": 16}})
    first, second, third = recorder.stages
    assert first["begin"]["state"] == [0.0] and first["end"]["state"] != [0.0]
    assert second["begin"]["state"] == first["end"]["state"]  # t carried
    assert third["begin"]["state"] == [20.0, 100.0]  # AdaFace's own start values
    assert (second["begin"]["width"], third["begin"]["width"]) == (4, 5)  # + the norm
    np.testing.assert_array_equal(third["begin"]["head"], second["end"]["head"])

    script = ("import facekit; m = facekit.load_model(r'%s', compile=True); "
              "print(type(m.loss).__name__, type(m.layers[-2]).__name__, "
              "[round(float(v), 4) for v in m.get_layer('loss_state').get_weights()])"
              % result.model_path)
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(tinynet_plugin)}, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.split()[:2] == ["AdaFaceLoss", "SubCenterNormDense"]
    assert str([round(v, 4) for v in recorder.stages[-1]["end"]["state"]]) in loaded.stdout
