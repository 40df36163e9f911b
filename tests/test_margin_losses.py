"""The margin-loss family against independent NumPy versions of each paper's code:
every branch, state updates, gradients at the edges, serialization."""

import math

import numpy as np
import pytest
import tensorflow as tf

from facekit_plugins.heads import normdense_head, subcenter_head
from facekit_plugins.losses import (adacos_loss, adaface_loss, arcface_loss, combined_loss,
                                    cosface_loss, curricularface_loss, magface_loss)
from facekit_plugins.losses.margin import ElasticFaceLoss
from tests.test_losses import TARGET_COSINES, cosine_batch, np_cross_entropy


def np_combined(one_hot, cos, m1, m2, m3, s):
    """insightface naming: cos(m1·θ + m2) − m3; plain cosine where the angle passes π."""
    theta = np.arccos(np.clip(cos, -1, 1))
    angle = m1 * theta + m2
    target = np.where(angle <= math.pi, np.cos(angle) - m3, cos)
    return np.where(one_hot > 0, target, cos) * s


def elastic(**options):
    """ElasticFace with a seed (not an option of the registered losses)."""
    return ElasticFaceLoss(**{"scale": 64.0, "std": 0.05, "plus": False, "angular": True,
                              **options})


def loss_value(loss, labels, scores):
    return float(loss(labels, tf.constant(scores)))


@pytest.mark.parametrize("m1,m2,m3,s", [(1.0, 0.5, 0.0, 64.0), (1.0, 0.0, 0.35, 64.0),
                                        (0.9, 0.15, 0.4, 30.0)])
def test_combined_uses_insightface_names(m1, m2, m3, s):
    cos, labels, one_hot = cosine_batch()
    expected = np_cross_entropy(one_hot, np_combined(one_hot, cos, m1, m2, m3, s))
    assert loss_value(combined_loss(m1, m2, m3, s), labels, cos) == pytest.approx(
        expected, rel=1e-4)
    # The design notes' arcface names the same margins the other way round.
    swapped = arcface_loss(margin1=m1, margin2=m3, margin3=m2, scale=s)
    assert loss_value(swapped, labels, cos) == pytest.approx(expected, rel=1e-4)


def test_combined_arcface_branch_past_pi_is_hit():
    _, _, one_hot = cosine_batch()
    cos = np.tile(TARGET_COSINES[:, None], (1, 5)).astype(np.float32)
    past = np.arccos(TARGET_COSINES) + 0.5 > math.pi
    assert past.any() and (~past).any()
    logits = combined_loss(1.0, 0.5, 0.0, 1.0).logits(one_hot, cos)
    np.testing.assert_allclose(np.asarray(logits)[one_hot > 0][past], TARGET_COSINES[past],
                               rtol=1e-5)


def test_cosface():
    cos, labels, one_hot = cosine_batch(2)
    expected = np_cross_entropy(one_hot, (cos - 0.35 * one_hot) * 64)
    assert loss_value(cosface_loss(), labels, cos) == pytest.approx(expected, rel=1e-4)


def test_elasticface_without_spread_is_arcface_and_cosface():
    cos, labels, one_hot = cosine_batch(3)
    arc = elastic(margin=0.5, std=0.0, angular=True, seed=1)
    assert loss_value(arc, labels, cos) == pytest.approx(
        np_cross_entropy(one_hot, np_combined(one_hot, cos, 1.0, 0.5, 0.0, 64)), rel=1e-4)
    cosine = elastic(margin=0.35, std=0.0, angular=False, seed=1)
    assert loss_value(cosine, labels, cos) == pytest.approx(
        np_cross_entropy(one_hot, (cos - 0.35 * one_hot) * 64), rel=1e-4)


def test_elasticface_draws_a_margin_per_sample_and_plus_sorts_them():
    rng = np.random.default_rng(4)
    cos = rng.uniform(-1, 1, (4096, 3)).astype(np.float32)
    one_hot = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 4096)]
    drawn = np.asarray(elastic(margin=0.5, std=0.05, seed=7).sample_margins(
        one_hot, cos))[:, 0]
    assert drawn.mean() == pytest.approx(0.5, abs=0.005)
    assert drawn.std() == pytest.approx(0.05, rel=0.1)
    plus = np.asarray(elastic(margin=0.5, std=0.05, seed=7, plus=True).sample_margins(
        one_hot, cos))[:, 0]
    order = np.argsort(-(cos * one_hot).sum(axis=1), kind="stable")
    np.testing.assert_allclose(plus, np.sort(drawn)[order])  # the reference's indexing


def np_curricular(one_hot, cos, t, s=64.0, m=0.5, alpha=0.01):
    target = (cos * one_hot).sum(axis=1, keepdims=True)
    sine = np.sqrt(1 - target ** 2)
    with_margin = target * math.cos(m) - sine * math.sin(m)
    final = np.where(target > math.cos(math.pi - m), with_margin,
                     target - math.sin(math.pi - m) * m)
    t = target.mean() * alpha + (1 - alpha) * t
    negatives = np.where(cos > with_margin, cos * (t + cos), cos)
    return np.where(one_hot > 0, final, negatives) * s, t


def test_curricularface_updates_t_and_reweights_hard_negatives():
    loss = curricularface_loss()
    t = 0.0
    for seed in (5, 6):  # t carries from one step to the next
        cos, labels, one_hot = cosine_batch(seed)
        logits, t = np_curricular(one_hot.astype(np.float64), cos.astype(np.float64), t)
        assert loss_value(loss, labels, cos) == pytest.approx(
            np_cross_entropy(one_hot, logits), rel=1e-4)
        assert float(loss.state["t"]) == pytest.approx(t, rel=1e-5)


def np_adaface(one_hot, cos, norms, mean, std, s=64.0, m=0.4, h=0.333, alpha=0.01, eps=1e-3):
    cos = np.clip(cos, -1 + eps, 1 - eps)
    norms = np.clip(norms, 0.001, 100)
    mean = norms.mean() * alpha + (1 - alpha) * mean
    std = norms.std(ddof=1) * alpha + (1 - alpha) * std
    scaler = np.clip((norms - mean) / (std + eps) * h, -1, 1)[:, None]
    theta = np.clip(np.arccos(cos) + one_hot * (-m * scaler), eps, math.pi - eps)
    return (np.cos(theta) - one_hot * (m + m * scaler)) * s, mean, std


def test_adaface_follows_the_norm_and_keeps_running_statistics():
    loss = adaface_loss()
    mean, std = 20.0, 100.0
    for seed in (8, 9):
        cos, labels, one_hot = cosine_batch(seed)
        norms = np.random.default_rng(seed).uniform(0.0, 150.0, len(labels))  # past both clips
        logits, mean, std = np_adaface(one_hot, cos.astype(np.float64), norms, mean, std)
        scores = np.concatenate([cos, norms[:, None]], axis=1).astype(np.float32)
        assert loss_value(loss, labels, scores) == pytest.approx(
            np_cross_entropy(one_hot, logits), rel=1e-4)
        assert (float(loss.state["batch_mean"]), float(loss.state["batch_std"])) == \
            pytest.approx((mean, std), rel=1e-5)


def np_magface(one_hot, cos, norms, s=64.0, l_a=10.0, u_a=110.0, l_m=0.45, u_m=0.8, lam=35.0):
    a = np.clip(norms, l_a, u_a)[:, None]
    m = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m
    sine = np.sqrt(1 - cos ** 2)
    with_margin = np.where(cos > np.cos(math.pi - m), cos * np.cos(m) - sine * np.sin(m),
                           cos - np.sin(math.pi - m) * m)
    logits = np.where(one_hot > 0, with_margin, cos) * s
    penalty = lam * (a[:, 0] / u_a ** 2 + 1 / a[:, 0])
    return np_cross_entropy(one_hot, logits) + penalty.mean()


def test_magface_margin_grows_with_the_norm_and_regularizes_it():
    cos, labels, one_hot = cosine_batch(10)
    norms = np.array([1.0, 10.0, 30.0, 60.0, 110.0, 500.0, 85.0])  # both clamps hit
    scores = np.concatenate([cos, norms[:, None]], axis=1).astype(np.float32)
    expected = np_magface(one_hot, cos.astype(np.float64), norms)
    assert loss_value(magface_loss(), labels, scores) == pytest.approx(expected, rel=1e-4)


def test_adacos_fixed_and_dynamic_scale():
    cos, labels, one_hot = cosine_batch(11)
    classes = cos.shape[1]
    fixed = math.sqrt(2) * math.log(classes - 1)
    assert loss_value(adacos_loss(), labels, cos) == pytest.approx(
        np_cross_entropy(one_hot, cos * fixed), rel=1e-4)
    dynamic = adacos_loss(dynamic=True)
    scale = fixed
    for seed in (11, 12):
        cos, labels, one_hot = cosine_batch(seed)
        b_avg = np.sum((1 - one_hot) * np.exp(scale * cos)) / len(cos)
        theta = np.sort(np.arccos((cos * one_hot).sum(axis=1)))
        median = theta[(len(theta) - 1) // 2]  # torch.median: the lower middle value
        scale = math.log(b_avg) / math.cos(min(math.pi / 4, median))
        assert loss_value(dynamic, labels, cos) == pytest.approx(
            np_cross_entropy(one_hot, cos * scale), rel=1e-4)
        assert float(dynamic.state["scale"]) == pytest.approx(scale, rel=1e-5)


def test_subcenter_takes_the_best_center_and_can_append_the_norm():
    rng = np.random.default_rng(14)
    x = rng.normal(size=(6, 8)).astype(np.float32)
    layer = subcenter_head(5, centers=3, append_norm=True)
    out = np.asarray(layer(x))
    kernel = np.asarray(layer.kernel)
    kernel = kernel / np.linalg.norm(kernel, axis=0, keepdims=True)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    expected = (unit @ kernel).reshape(6, 5, 3).max(axis=2)
    np.testing.assert_allclose(out[:, :5], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[:, 5], np.linalg.norm(x, axis=1), rtol=1e-5)
    single = subcenter_head(5, centers=1)
    plain = normdense_head(5)
    single.build((None, 8))
    plain.build((None, 8))
    plain.set_weights(single.get_weights())
    np.testing.assert_allclose(np.asarray(single(x)), np.asarray(plain(x)), rtol=1e-6)
