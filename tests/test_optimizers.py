"""Optimizers and learning-rate schedules."""

import keras
import numpy as np
import pytest

import facekit
from facekit.errors import FacekitError
from facekit.fit.optimizers import EpochWise, learning_rate, make_optimizer
from tests.conftest import TINY_TRAIN, run_facekit


def values(rate, steps):
    return np.array([float(rate(step)) for step in range(steps)])


def test_cosine_with_warmup():
    rate = values(learning_rate("cosine", 0.1, steps_per_epoch=10, epochs=5,
                                warmup_epochs=1), 50)
    np.testing.assert_allclose(rate[:11], np.linspace(0, 0.1, 11), atol=1e-6)
    assert rate[10] == pytest.approx(0.1) and rate[-1] < 0.001
    assert np.all(np.diff(rate[10:]) <= 1e-9)


def test_exponential_step_and_per_epoch():
    exponential = learning_rate("exponential", 1.0, steps_per_epoch=4, epochs=3,
                                decay_rate=0.5, per_epoch=True)
    np.testing.assert_allclose(values(exponential, 12), [1] * 4 + [0.5] * 4 + [0.25] * 4,
                               rtol=1e-6)
    step = learning_rate("step", 1.0, steps_per_epoch=2, epochs=6, decay_rate=0.1,
                         step_epochs=(2, 4))
    np.testing.assert_allclose(values(step, 12)[[0, 3, 4, 7, 8, 11]],
                               [1, 1, 0.1, 0.1, 0.01, 0.01], rtol=1e-5)
    with pytest.raises(FacekitError, match="needs --step-epochs"):
        learning_rate("step", 1.0, steps_per_epoch=2, epochs=6)


def test_epochwise_schedule_round_trips():
    rate = EpochWise(keras.optimizers.schedules.CosineDecay(0.1, 100), 10)
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(rate))
    np.testing.assert_allclose(values(clone, 30), values(rate, 30))


@pytest.mark.parametrize("name", ["adamax", "adam", "adamw", "sgd"])
def test_optimizers(name):
    optimizer = make_optimizer(name, 0.01, weight_decay=1e-4)
    assert optimizer.weight_decay == pytest.approx(1e-4)
    if name == "sgd":
        assert optimizer.momentum == 0.9


def test_scheduled_run_saves_and_resumes(tmp_path, tiny_faces, tinynet_plugin):
    options = {**TINY_TRAIN, "schedule": "cosine", "warmup_epochs": 1.0,
               "schedule_per": "epoch", "optimizer": "sgd", "weight_decay": 1e-4}
    facekit.train(data=str(tiny_faces), output=str(tmp_path / "run"), **options)
    result = facekit.train(resume=tmp_path / "run", epochs=2)
    optimizer = facekit.load_model(result.model_path, compile=True).optimizer
    assert int(optimizer.iterations.numpy()) == 4  # 2 epochs x 2 steps
    assert optimizer.get_config()["learning_rate"]["class_name"] == "EpochWise"


def test_cli_schedule_errors():
    result = run_facekit("train", "--schedule", "step")
    assert result.returncode == 2 and "--schedule step needs --step-epochs" in result.stderr
    result = run_facekit("train", "--step-epochs", "10,x")
    assert result.returncode == 2 and "whole numbers separated by commas" in result.stderr
