"""Losses against independent NumPy implementations, and finite gradients at the edges."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from facekit_plugins.losses import arcface_loss, arcface_simple_loss, softmax_loss


def np_cross_entropy(one_hot, logits, label_smoothing=0.0):
    classes = logits.shape[-1]
    targets = one_hot * (1 - label_smoothing) + label_smoothing / classes
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return float(np.mean(-(targets * log_softmax).sum(axis=-1)))


def np_arcface_logits(one_hot, cos, m1, m2, m3, s):
    """The design notes' insightface formula, element by element."""
    out = np.empty_like(cos, dtype=np.float64)
    for idx, c in np.ndenumerate(cos):
        theta = math.acos(min(1.0, max(-1.0, c)))
        if one_hot[idx] and theta * m1 + m3 <= math.pi:
            out[idx] = math.cos(theta * m1 + m3) - m2
        else:
            out[idx] = c
    return out * s


def np_arcface_simple_logits(one_hot, cos, s, m):
    out = np.empty_like(cos, dtype=np.float64)
    for idx, c in np.ndenumerate(cos):
        if not one_hot[idx]:
            out[idx] = c
        elif c > math.cos(math.pi - m):
            out[idx] = c * math.cos(m) - math.sqrt(max(0.0, 1 - c * c)) * math.sin(m)
        else:
            out[idx] = c - math.sin(m) * m
    return out * s


# Target cosines covering every branch: near +1, middle, below cos(pi - m), near -1.
TARGET_COSINES = np.array([0.999, 0.6, 0.0, -0.5, -0.88, -0.95, -0.9999])


def cosine_batch(seed=0):
    rng = np.random.default_rng(seed)
    cos = rng.uniform(-1, 1, size=(len(TARGET_COSINES), 5))
    labels = rng.integers(0, 5, size=len(TARGET_COSINES))
    cos[np.arange(len(labels)), labels] = TARGET_COSINES
    return cos.astype(np.float32), labels, np.eye(5, dtype=np.float32)[labels]


@pytest.mark.parametrize("margins", [(0.9, 0.4, 0.15, 64.0), (1.0, 0.0, 0.5, 64.0),
                                     (1.0, 0.35, 0.0, 30.0)])
def test_arcface_matches_numpy(margins):
    cos, labels, one_hot = cosine_batch()
    m1, m2, m3, s = margins
    expected = np_cross_entropy(one_hot, np_arcface_logits(one_hot, cos, m1, m2, m3, s))
    loss = arcface_loss(margin1=m1, margin2=m2, margin3=m3, scale=s)
    assert float(loss(labels, cos)) == pytest.approx(expected, rel=1e-4)
    assert float(loss(one_hot, cos)) == pytest.approx(expected, rel=1e-4)


def test_arcface_no_margin_branch_is_hit():
    """With m3=0.5, targets with theta > pi - 0.5 (cos < -0.878) keep their plain cosine."""
    cos, _, one_hot = cosine_batch()
    logits = np_arcface_logits(one_hot, cos, 1.0, 0.0, 0.5, 1.0)
    plain = (TARGET_COSINES < math.cos(math.pi - 0.5))
    target_logits = logits[one_hot.astype(bool)]
    np.testing.assert_allclose(target_logits[plain], TARGET_COSINES[plain], rtol=1e-6)
    assert plain.any() and (~plain).any()


@pytest.mark.parametrize("scale,margin", [(64.0, 0.45), (30.0, 0.5)])
def test_arcface_simple_matches_numpy(scale, margin):
    cos, labels, one_hot = cosine_batch(1)
    expected = np_cross_entropy(one_hot, np_arcface_simple_logits(one_hot, cos, scale, margin))
    loss = arcface_simple_loss(scale=scale, margin=margin)
    assert float(loss(labels, cos)) == pytest.approx(expected, rel=1e-4)
    assert float(loss(labels[:, None], cos)) == pytest.approx(expected, rel=1e-4)


def test_softmax_matches_numpy_with_label_smoothing():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, size=(6, 4)).astype(np.float32)
    labels = rng.integers(0, 4, size=6)
    one_hot = np.eye(4, dtype=np.float32)[labels]
    for smoothing in (0.0, 0.1):
        loss = softmax_loss(label_smoothing=smoothing)
        expected = np_cross_entropy(one_hot, logits, smoothing)
        assert float(loss(labels, logits)) == pytest.approx(expected, rel=1e-5)
        assert float(loss(one_hot, logits)) == pytest.approx(expected, rel=1e-5)


EDGE_COSINES = [1.0, -1.0, 1.0000001, -1.0000001, 0.9999999, -0.9999999]


@pytest.mark.parametrize("loss", [arcface_loss(), arcface_loss(1.0, 0.0, 0.5),
                                  arcface_simple_loss()], ids=["arcface", "arcface-std",
                                                             "arcface-simple"])
@pytest.mark.parametrize("edge", EDGE_COSINES)
def test_gradients_finite_at_the_edges(loss, edge):
    """acos and sqrt have infinite slopes at ±1: the loss must clip before them."""
    cos = tf.Variable([[edge, edge, 0.2], [0.3, edge, edge], [edge, -edge, edge]],
                      dtype=tf.float32)
    labels = tf.constant([0, 1, 2])
    with tf.GradientTape() as tape:
        value = loss(labels, cos)
    grad = tape.gradient(value, cos)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(grad.numpy()))


@pytest.mark.parametrize("loss_class", [arcface_loss, arcface_simple_loss, softmax_loss])
def test_low_precision_scores_give_float32_loss(loss_class):
    cos, labels, _ = cosine_batch()
    for dtype in ("float16", "bfloat16"):
        value = loss_class()(labels, keras.ops.cast(cos, dtype))
        assert value.dtype == "float32"
        assert np.isfinite(float(value))


@pytest.mark.parametrize("loss", [arcface_loss(0.8, 0.3, 0.2, 32.0), arcface_simple_loss(16.0, 0.3),
                                  softmax_loss(0.05)])
def test_config_round_trip(loss):
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(clone) is type(loss)
    assert clone.get_config() == loss.get_config()
    cos, labels, _ = cosine_batch()
    assert float(clone(labels, cos)) == pytest.approx(float(loss(labels, cos)))
