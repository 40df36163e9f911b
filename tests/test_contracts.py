"""Contract tests over the registry: registering a loss or a head puts it under them.

Every loss: finite loss and gradients at and past cos = ±1 (and the norm's clamps),
float32 results from reduced-precision scores, a config round trip, and factory
defaults that are the loss's own (the class restates none).  Every head: the same
defaults and round trip.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from facekit.model.losses import MarginLoss
from facekit.registry import get_registry
from tests.test_losses import cosine_batch

REGISTRY = get_registry()
# Options whose other settings take another code path, tested besides the defaults.
VARIANTS = {"adacos": [{"dynamic": True}], "elasticface-arc": [{"plus": True}],
            "softmax": [{"label_smoothing": 0.1}]}
LOSSES = [(name, options) for name in REGISTRY.names("loss")
          for options in [{}, *VARIANTS.get(name, [])]]
IDS = [name + "".join(f"-{k}={v}" for k, v in options.items()) for name, options in LOSSES]


def build_loss(name, options):
    return REGISTRY.get("loss", name).build(**options)


def scores_for(loss, cos):
    if loss.needs_norm:  # the embedding norm: below, inside and past its clamps
        norms = np.resize(np.array([0.0005, 10.0, 1e4], np.float32), (len(cos), 1))
        cos = np.concatenate([cos, norms], axis=1)
    return cos.astype(np.float32)


@pytest.mark.parametrize("name,options", LOSSES, ids=IDS)
@pytest.mark.parametrize("edge", [1.0, -1.0, 1.0 + 1e-7, -1.0 - 1e-7])
def test_losses_have_finite_gradients_at_the_edges(name, options, edge):
    loss = build_loss(name, options)
    cos = np.array([[edge, 0.2, -0.3], [0.1, edge, 0.5], [0.3, 0.2, edge]], np.float32)
    scores = tf.Variable(scores_for(loss, cos))
    with tf.GradientTape() as tape:
        value = loss(np.array([0, 1, 2]), scores)
    gradient = tape.gradient(value, scores)
    assert np.isfinite(float(value)) and np.all(np.isfinite(gradient.numpy()))


@pytest.mark.parametrize("name,options", LOSSES, ids=IDS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_losses_compute_in_float32(name, options, dtype):
    loss = build_loss(name, options)
    cos, labels, _ = cosine_batch(13)
    value = loss(labels, tf.cast(tf.constant(scores_for(loss, cos)), dtype))
    assert value.dtype == tf.float32 and np.isfinite(float(value))


@pytest.mark.parametrize("name,options", LOSSES, ids=IDS)
def test_losses_round_trip_through_their_config(name, options):
    loss = build_loss(name, options)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(clone) is type(loss) and clone.get_config() == loss.get_config()


@pytest.mark.parametrize("name", REGISTRY.names("loss"))
def test_losses_are_margin_losses_whose_defaults_are_the_factorys(name):
    component = REGISTRY.get("loss", name)
    loss = component.build()
    assert isinstance(loss, MarginLoss)  # what partial-fc and the docs rely on
    config = loss.get_config()
    assert {key: config[key] for key in component.options} == component.options


@pytest.mark.parametrize("name", REGISTRY.names("head"))
def test_heads_keep_the_factorys_defaults_and_round_trip(name):
    component = REGISTRY.get("head", name)
    layer = component.build(7)
    config = layer.get_config()
    assert {key: config[key] for key in component.options} == component.options
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
