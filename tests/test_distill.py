"""Distillation from a teacher (with and without labels) and weight averaging (EMA)."""

import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import facekit
from facekit.config import DISTANCES
from facekit.fit.distill import Distillation, distance
from facekit.run_folder import RunFolder
from tests.conftest import TINY_TRAIN, on_logical_cpus

EXACT = {**TINY_TRAIN, "dropout": 0.0, "augment": "none", "bn_recalibration_batches": 0,
         "deterministic": True, "steps_per_epoch": 3, "schedule": "constant"}


def numpy_distance(student, teacher, kind):
    if kind == "cosine":
        s = student / np.linalg.norm(student, axis=-1, keepdims=True)
        t = teacher / np.linalg.norm(teacher, axis=-1, keepdims=True)
        return 1 - (s * t).sum(-1)
    return ((student - teacher) ** 2).sum(-1)


def numpy_gradient(student, teacher, kind):
    """d distance / d student, by hand."""
    if kind == "cosine":
        norm = np.linalg.norm(student, axis=-1, keepdims=True)
        s, t = student / norm, teacher / np.linalg.norm(teacher, axis=-1, keepdims=True)
        cosine = (s * t).sum(-1, keepdims=True)
        return -(t - cosine * s) / norm
    return 2 * (student - teacher)


@pytest.mark.parametrize("kind", DISTANCES)
def test_the_distances_match_numpy_in_value_and_gradient(kind):
    rng = np.random.default_rng(0)
    student = rng.normal(size=(6, 5)).astype(np.float32)
    teacher = rng.normal(size=(6, 5)).astype(np.float32) * 3
    variable = tf.Variable(student)
    with tf.GradientTape() as tape:
        values = distance(variable, tf.constant(teacher), kind)
        total = tf.reduce_sum(values)
    gradient = tape.gradient(total, variable).numpy()
    np.testing.assert_allclose(values.numpy(), numpy_distance(student, teacher, kind),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gradient, numpy_gradient(student, teacher, kind),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", DISTANCES)
def test_the_distances_have_finite_gradients_at_the_edges(kind):
    zeros, same = np.zeros((2, 4), np.float32), np.ones((2, 4), np.float32)
    for student, teacher in ((zeros, same), (same, same), (same, zeros)):
        variable = tf.Variable(student)
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(distance(variable, tf.constant(teacher), kind))
        assert np.isfinite(value.numpy())
        assert np.isfinite(tape.gradient(value, variable).numpy()).all()


def _teacher(size=24, width=6, seed=0):
    keras.utils.set_random_seed(seed)
    images = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(images / 255.0))
    return keras.Model(images, keras.layers.Dense(width)(x), name="basic_model")


def test_the_layer_adds_the_weighted_distance_to_the_centred_teacher():
    teacher = _teacher(size=24, width=6)
    layer = Distillation(teacher, "cosine", weight=2.5, student_width=4)
    rng = np.random.default_rng(1)
    batches = [(rng.uniform(0, 255, (3, 16, 16, 3)).astype(np.float32),
                rng.normal(size=(3, 4)).astype(np.float32)) for _ in range(3)]
    targets = [teacher.predict(tf.image.resize(images, (24, 24), antialias=True).numpy(),
                               verbose=0) for images, _ in batches]  # at the teacher's size

    def expected(embedding, target, mean):
        projected = embedding @ layer.projection.get_weights()[0]
        return 2.5 * numpy_distance(projected, target - mean, "cosine").mean()

    # training batches: the running mean is the average of the batches seen so far
    for number, (images, embedding) in enumerate(batches[:2]):
        out = layer([images, embedding], training=True)
        np.testing.assert_array_equal(out, embedding)
        mean = np.mean([t.mean(0) for t in targets[:number + 1]], axis=0)
        np.testing.assert_allclose(layer.teacher_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(float(layer.losses[0]),
                                   expected(embedding, targets[number], mean), rtol=1e-4)
    # evaluation uses the mean and leaves it alone
    images, embedding = batches[2]
    layer([images, embedding], training=False)
    np.testing.assert_allclose(layer.teacher_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(layer.losses[0]), expected(embedding, targets[2], mean),
                               rtol=1e-4)
    assert not teacher.trainable and all(not w.trainable for w in teacher.weights)
    assert {w.name for w in layer.non_trainable_weights} >= {"teacher_mean", "batches"}


def _flat_folder(faces, folder):
    """The images of ``faces`` with no identity sub-folders."""
    folder.mkdir()
    for number, path in enumerate(sorted(faces.glob("*/*"))):
        shutil.copy(path, folder / f"{number:03d}{path.suffix}")
    return folder


def test_a_folder_without_identities_trains_from_the_teacher_alone(tmp_path, tiny_faces,
                                                                    tinynet_plugin):
    teacher = facekit.train(data=str(tiny_faces), output=str(tmp_path / "teacher"),
                            **{**TINY_TRAIN, "embedding_size": 8, "image_size": 48})
    flat = _flat_folder(tiny_faces, tmp_path / "flat")
    (flat / "notes.txt").write_text("not an image")
    (flat / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    result = facekit.train(data=str(flat), output=str(tmp_path / "student"),
                           teacher=str(teacher.run_dir), **{**TINY_TRAIN, "epochs": 2})
    assert set(result.history) == {"loss", "distill_loss"}  # no head, no accuracy
    np.testing.assert_allclose(result.history["loss"], result.history["distill_loss"],
                               rtol=1e-5)
    run = RunFolder(result.run_dir)
    assert "no_labels = true" in run.config.read_text()  # found, and recorded for --resume
    skipped = run.skipped_files.read_text()
    assert "notes.txt" in skipped and "broken.jpg" in skipped
    basic = facekit.load_model(result.run_dir)
    assert basic.output_shape == (None, 16) and basic.input_shape == (None, 32, 32, 3)
    resumed = facekit.train(resume=result.run_dir, epochs=3)
    assert len(resumed.history["loss"]) == 1
    # the labels of identity folders are ignored with --no-labels
    labelled = facekit.train(data=str(tiny_faces), output=str(tmp_path / "ignored"),
                             teacher=str(teacher.run_dir), no_labels=True, **TINY_TRAIN)
    assert "accuracy" not in labelled.history


def test_a_distilled_run_with_ema_resumes_exactly(tmp_path, tiny_faces, tinynet_plugin):
    teacher = facekit.train(data=str(tiny_faces), output=str(tmp_path / "teacher"),
                            **{**TINY_TRAIN, "embedding_size": 24})
    run = {**EXACT, "teacher": str(teacher.run_dir), "ema": True, "ema_momentum": 0.5,
           "distill_loss": "l2", "distill_weight": 0.5}
    straight = facekit.train(data=str(tiny_faces), output=str(tmp_path / "a"),
                             **{**run, "epochs": 2})
    facekit.train(data=str(tiny_faces), output=str(tmp_path / "b"), **{**run, "epochs": 1})
    resumed = facekit.train(resume=tmp_path / "b", epochs=2)
    a = facekit.load_model(straight.model_path, compile=True)
    b = facekit.load_model(resumed.model_path, compile=True)
    for x, y in zip(a.weights + a.optimizer.variables, b.weights + b.optimizer.variables):
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-5, atol=1e-6)
    # the saved basic model is the average, not the last trained weights
    optimizer = b.optimizer
    averages = {v.path: a.numpy() for v, a in zip(optimizer._trainable_variables,
                                                  optimizer._model_variables_moving_average)}
    basic = facekit.load_model(resumed.basic_model_path)
    trained = b.get_layer("basic_model")
    kernels = [(w, t) for w, t in zip(basic.trainable_weights, trained.trainable_weights)]
    assert any(not np.allclose(w.numpy(), t.numpy()) for w, t in kernels)
    for saved, live in kernels:
        np.testing.assert_allclose(saved.numpy(), averages[live.path], rtol=1e-6)
    # the projection (16 -> 24) is the training model's, never the basic model's
    assert b.get_layer("distillation").projection is not None
    assert basic.output_shape == (None, 16)
    assert not [w for w in basic.weights if "projection" in w.path or "teacher" in w.path]
    # the checkpoint, teacher inside, loads in a fresh process without custom objects
    import os
    import subprocess
    import sys

    script = ("import facekit; m = facekit.load_model(%r, compile=True); "
              "print('WIDTH', m.get_layer('distillation').teacher_width)" % str(resumed.model_path))
    env = {**os.environ, "PYTHONPATH": str(tinynet_plugin), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300)
    assert "WIDTH 24" in done.stdout, done.stderr[-2000:]


def test_a_teacher_of_another_size_teaches_any_head(tmp_path, tiny_faces, tinynet_plugin):
    teacher = facekit.train(data=str(tiny_faces), output=str(tmp_path / "teacher"),
                            **{**TINY_TRAIN, "image_size": 40})
    for head, loss in (("normdense", "cosface"), ("partial-fc", "arcface")):
        result = facekit.train(data=str(tiny_faces), output=str(tmp_path / head),
                               teacher=str(teacher.run_dir), head=head, loss=loss,
                               **TINY_TRAIN)
        assert result.history["distill_loss"][0] > 0
        assert result.history["loss"][0] > result.history["distill_loss"][0]


def test_teacher_mistakes_are_one_sentence(tmp_path, tiny_faces):
    with pytest.raises(facekit.FacekitError, match="teacher .* is not a model"):
        facekit.train(data=str(tiny_faces), teacher=str(tmp_path / "none"),
                      output=str(tmp_path / "a"))
    with pytest.raises(facekit.FacekitError, match="no_labels trains from a teacher"):
        facekit.train(data=str(tiny_faces), no_labels=True, output=str(tmp_path / "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_distillation_and_ema_on_two_replicas_with_either_head(tmp_path, tiny_faces,
                                                              tinynet_plugin):
    teacher = facekit.train(data=str(tiny_faces), output=str(tmp_path / "teacher"),
                            **{**TINY_TRAIN, "embedding_size": 12})
    history, _ = on_logical_cpus(f"""
        stages = [{{"head": "normdense", "loss": "cosface", "epochs": 1}},
                  {{"head": "partial-fc", "loss": "arcface", "epochs": 1}}]
        result = facekit.train(data={str(tiny_faces)!r}, output={str(tmp_path / 'run')!r},
                               devices="cpu:0,cpu:1", backbone="tinynet", image_size=32,
                               batch_size=8, steps_per_epoch=2, embedding_size=8,
                               bn_recalibration_batches=2, verbose=0, stages=stages,
                               teacher={str(teacher.run_dir)!r}, ema=True)
        print("RESULT", json.dumps(result.history))
    """, tinynet_plugin)
    assert len(history["distill_loss"]) == 2 and all(np.isfinite(history["loss"]))
    assert facekit.load_model(tmp_path / "run").output_shape == (None, 8)
