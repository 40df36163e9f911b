"""Partial FC: sharded, sampled class centers (facekit.fit.partial_fc)."""

import textwrap

import numpy as np
import pytest

from tests.conftest import REPO, invoke_facekit, on_logical_cpus

CLASSES, SIZE = 11, 8


def _models(loss, rate=1.0, optimizer="sgd", seed=0, with_dense=True):
    """A partial-fc model and (``with_dense``) a normdense model with the same weights and a
    one-layer embedding network; both compiled with ``loss`` (a factory) and
    ``optimizer``."""
    import keras

    from facekit.fit.partial_fc import PartialFCModel
    from facekit.model.losses import LossState, bind_loss_state, initial_state
    from facekit_plugins.heads import normdense_head, partial_fc_head

    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(4, SIZE)).astype("float32") * 0.5
    centers = rng.normal(size=(CLASSES, SIZE)).astype("float32")

    def basic():
        inputs = keras.Input((4,))
        outputs = keras.layers.Dense(SIZE, use_bias=False, name="embedding")(inputs)
        model = keras.Model(inputs, outputs, name="basic_model")
        model.set_weights([dense])
        return model

    def make_optimizer():
        if optimizer == "sgd":
            return keras.optimizers.SGD(0.1, momentum=0.9)
        return {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
                "adamax": keras.optimizers.Adamax}[optimizer](0.01)

    first, second = loss(), loss()
    state = initial_state(first, CLASSES)
    head = partial_fc_head(CLASSES, sample_rate=rate, append_norm=first.needs_norm)
    partial = PartialFCModel(basic(), head, state=LossState(state, name="loss_state")
                             if state else None)
    head.set_weights([centers])
    if not with_dense:
        bind_loss_state(partial, first)
        partial.compile(optimizer=make_optimizer(), loss=first)
        return partial, None
    inputs = keras.Input((4,))
    scores = normdense_head(CLASSES, append_norm=first.needs_norm)(basic()(inputs))
    if state:
        scores = LossState(state, name="loss_state")(scores)
    dense_model = keras.Model(inputs, scores)
    dense_model.layers[2].set_weights([centers.T])
    for model, model_loss in ((partial, first), (dense_model, second)):
        bind_loss_state(model, model_loss)
        model.compile(optimizer=make_optimizer(), loss=model_loss)
    return partial, dense_model


def _batch(seed=1, size=6):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(size, 4)).astype("float32"),
            rng.integers(0, CLASSES, size).astype("int32"))


def _loss(name):
    from facekit_plugins import losses

    factories = {"arcface": losses.arcface_loss, "combined": losses.combined_loss,
                 "cosface": losses.cosface_loss, "adaface": losses.adaface_loss,
                 "curricularface": losses.curricularface_loss,
                 "magface": losses.magface_loss}
    return lambda: factories[name](scale=16.0)


def test_shards_cover_every_class_once():
    from facekit.fit.partial_fc import sample_size, shard_range

    for classes, replicas in ((11, 1), (11, 2), (11, 3), (10, 4), (3, 3)):
        ranges = [shard_range(classes, replicas, r) for r in range(replicas)]
        covered = [c for start, size in ranges for c in range(start, start + size)]
        assert covered == list(range(classes))
        assert max(s for _, s in ranges) - min(s for _, s in ranges) <= 1
    assert sample_size(10**6, 8, 512, 0.1) == 12500  # insightface: rate x shard
    assert sample_size(1000, 1, 512, 0.1) == 512  # never fewer than the batch
    assert sample_size(100, 2, 512, 0.1) == 50  # never more than a shard


def test_sampling_keeps_every_positive_and_draws_the_rest_per_step():
    import tensorflow as tf

    from facekit_plugins.heads import partial_fc_head

    head = partial_fc_head(1000, sample_rate=0.05)
    head.build((None, SIZE))
    labels = tf.constant([3, 999, 3, 500, 17, 0, 250, 251], tf.int32)
    index, real, positive = head.sample(labels, batch=8, rate=0.05, step=0)
    index = index.numpy()
    assert len(index) == 50 and len(set(index)) == 50 and (np.diff(index) > 0).all()
    assert set(labels.numpy()) <= set(index) and real.numpy().all()
    positive = positive.numpy()  # each sample's positive column is its label's row
    assert (positive.sum(axis=1) == 1).all()
    assert (index[positive.argmax(axis=1)] == labels.numpy()).all()
    again = head.sample(labels, batch=8, rate=0.05, step=0)[0].numpy()
    later = head.sample(labels, batch=8, rate=0.05, step=1)[0].numpy()
    assert (again == index).all() and set(later) != set(index)  # reproducible, per step
    assert set(labels.numpy()) <= set(later)


@pytest.mark.parametrize("name", ["combined", "adaface", "curricularface"])
def test_full_rate_on_one_device_matches_normdense(name):
    """Same loss, and (SGD's first step moves weights by -lr x gradient) the same
    gradients for the centers and the embedding network."""
    partial, dense = _models(_loss(name))
    x, y = _batch()
    partial_loss = partial.train_on_batch(x, y, return_dict=True)["loss"]
    dense_loss = dense.train_on_batch(x, y, return_dict=True)["loss"]
    np.testing.assert_allclose(partial_loss, dense_loss, rtol=1e-5)
    np.testing.assert_allclose(partial.get_layer("partial_fc").get_weights()[0],
                               dense.layers[2].get_weights()[0].T, atol=1e-6)
    np.testing.assert_allclose(partial.get_layer("basic_model").get_weights()[0],
                               dense.layers[1].get_weights()[0], atol=1e-6)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "adamax", "sgd"])
def test_row_updates_follow_the_runs_optimizer(optimizer):
    partial, dense = _models(_loss("combined"), optimizer=optimizer)
    for seed in (1, 2, 3):
        x, y = _batch(seed)
        partial.train_on_batch(x, y)
        dense.train_on_batch(x, y)
    np.testing.assert_allclose(partial.get_layer("partial_fc").get_weights()[0],
                               dense.layers[2].get_weights()[0].T, atol=1e-5)


def test_sampled_loss_matches_numpy():
    """The softmax over the target (with its margin) and the sampled negatives only."""
    import tensorflow as tf

    from facekit_plugins.losses import combined_loss

    partial, _ = _models(_loss("combined"), rate=0.3, with_dense=False)
    head = partial.get_layer("partial_fc")
    x, y = _batch(size=3)
    embeddings = partial.get_layer("basic_model")(x).numpy()
    index, real, positive = head.sample(tf.constant(y), batch=3, rate=0.3, step=5)
    rows = tf.gather(head.kernel, index)
    per_sample, _ = head.step_loss(tf.constant(embeddings), tf.constant(y),
                                   combined_loss(scale=16.0), rows, real, positive)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    centers = head.get_weights()[0]
    centers = centers / np.linalg.norm(centers, axis=1, keepdims=True)
    expected = []
    for e, label in zip(unit, y):
        theta = np.arccos(np.clip(e @ centers[label], -1, 1))
        logits = [16.0 * np.cos(theta + 0.5)]
        logits += [16.0 * (e @ centers[c]) for c in index.numpy() if c != label]
        logits = np.array(logits)
        expected.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[0])
    np.testing.assert_allclose(per_sample.numpy(), expected, rtol=1e-4)
    assert len(index) == 4  # ceil(0.3 x 11) rows, the batch's classes among them


def test_a_loss_without_logits_is_refused():
    import keras

    from facekit.errors import FacekitError

    partial, _ = _models(_loss("combined"), with_dense=False)
    with pytest.raises(FacekitError, match="writes its logits from cosines"):
        partial.compile(optimizer="adam", loss=keras.losses.MeanSquaredError())


def test_train_with_partial_fc_on_one_device_in_mixed_precision(tmp_path, tiny_faces, tinynet_plugin):
    import facekit

    run = tmp_path / "run"
    invoke_facekit("train", "--data", tiny_faces, "--output", run, "--backbone", "tinynet",
                   "--image-size", 32, "--batch-size", 8, "--epochs", 2,
                   "--steps-per-epoch", 2, "--embedding-size", 16, "--head", "partial-fc",
                   "--head-opt", "sample_rate=0.2", "--loss", "cosface", "--mixed-precision")
    model = facekit.load_model(run / "model.keras", compile=True)  # with the row state
    head = model.get_layer("partial_fc")
    assert head.sample_rate == 0.2
    assert [w.shape for w in head.get_weights()] == [(4, 16)] * 3  # centers, Adamax's m, u
    basic = facekit.load_model(run / "basic_model.keras")
    assert "partial_fc" not in [layer.name for layer in basic.layers]


def _on_logical_cpus(devices: int, body: str, tinynet_plugin) -> dict:
    """Run ``body`` on ``devices`` logical CPUs with this file's models and a tiny
    dataset; returns what it puts in ``out``."""
    prelude = f"""
        import sys
        import numpy as np
        import keras
        sys.path.insert(0, {str(REPO)!r})
        from tests.test_partial_fc import _models, _loss, CLASSES
        rng = np.random.default_rng(0)
        x = rng.normal(size=(48, 4)).astype("float32")
        y = rng.integers(0, CLASSES, 48).astype("int32")
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(12, drop_remainder=True)
        out = {{}}
    """
    script = (textwrap.dedent(prelude) + textwrap.dedent(body)
              + '\nprint("RESULT", json.dumps(out))\n')
    return on_logical_cpus(script, tinynet_plugin, devices, timeout=400)[0]


def test_replicas_shards_and_resume_onto_more_devices(tmp_path, tiny_faces, tinynet_plugin):
    """On logical CPUs: 2 replicas train exactly as 1 when sampling is off; a model
    saved on 2 replicas loads whole onto 3 and trains on; facekit train runs
    partial-fc on two devices (its resume runs on two workers in test_distributed)."""
    saved, run = str(tmp_path / "two.keras"), str(tmp_path / "run")
    common = dict(backbone="tinynet", image_size=32, batch_size=12, steps_per_epoch=2,
                  embedding_size=8, bn_recalibration_batches=0, verbose=0, val_split=0.0,
                  head="partial-fc", head_options={"sample_rate": 0.2}, loss="arcface")
    two = _on_logical_cpus(2, f"""
        for replicas in (1, 2):
            strategy = (tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
                        if replicas > 1 else tf.distribute.get_strategy())
            with strategy.scope():
                model, _ = _models(_loss("adaface"), with_dense=False)
                model.fit(data, epochs=2, verbose=0, shuffle=False)
            head = model.get_layer("partial_fc")
            out[replicas] = {{"rows": head.rows,
                             "weights": [w.tolist() for w in head.get_weights()],
                             "basic": model.get_layer("basic_model").get_weights()[0].tolist()}}
        model.save({saved!r})
    """, tinynet_plugin)
    three = _on_logical_cpus(3, f"""
        with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1", "/cpu:2"]).scope():
            loaded = facekit.load_model({saved!r}, compile=True)
            head = loaded.get_layer("partial_fc")
            out = {{"rows": head.rows, "weights": [w.tolist() for w in head.get_weights()],
                   "iterations": int(loaded.optimizer.iterations.numpy()),
                   "loss": loaded.fit(data, epochs=1, verbose=0).history["loss"]}}
    """, tinynet_plugin)
    trained = _on_logical_cpus(2, f"""
        out["run"] = facekit.train(data={str(tiny_faces)!r}, output={run!r},
                                   devices="cpu:0,cpu:1", epochs=1, **{common!r}).history["loss"]
    """, tinynet_plugin)
    one, two = two["1"], two["2"]
    assert (one["rows"], two["rows"], three["rows"]) == (11, 6, 4)  # each replica: its shard
    for a, b in zip(one["weights"] + [one["basic"]], two["weights"] + [two["basic"]]):
        np.testing.assert_allclose(a, b, atol=2e-5)
    for a, b in zip(two["weights"], three["weights"]):  # re-sharded, whole and exact
        np.testing.assert_allclose(a, b, atol=0)
    assert three["iterations"] == 8 and np.isfinite(three["loss"]).all()
    assert len(trained["run"]) == 1 and np.isfinite(trained["run"]).all()


def test_every_cosine_loss_trains_through_sampled_classes():
    from facekit.registry import get_registry

    registry = get_registry()
    names = [name for name in registry.names("loss")
             if registry.get("loss", name).expects in ("cosine", "cosine+norm")]
    assert len(names) >= 10
    x, y = _batch(size=8)
    for name in names:
        component = registry.get("loss", name)
        partial, _ = _models(lambda: component.build(), rate=0.5, with_dense=False)
        first = partial.train_on_batch(x, y, return_dict=True)
        second = partial.train_on_batch(x, y, return_dict=True)
        assert np.isfinite([first["loss"], second["loss"]]).all(), name
        assert second["loss"] < first["loss"], name
