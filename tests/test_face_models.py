"""Face-native backbones and necks: reference parameter counts, shapes, one training
step each, GNAP against NumPy, and a fresh-process load."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from facekit.config import TrainConfig
from facekit.model.build import build_model
from facekit.registry import get_registry
from facekit_plugins.backbones.blocks import GroupConv2D

# Parameters of the reference models at 112x112 with a 512-d embedding, counted as
# PyTorch counts them (trainable weights, BatchNorm scale and shift).  IResNet and
# MobileFaceNet: insightface recognition/arcface_torch/backbones (r18 ... r200,
# get_mbf, get_mbf_large), built with torch 2.14; GhostFaceNetV1: HamadYA/GhostFaceNets
# (GhostNet width 1.3 + GDC, ReLU -> PReLU), built with Keras 3.15.  docs/models.md
# gives the same figures.
REFERENCE_PARAMS = {
    ("iresnet18", ()): 24_025_600,
    ("iresnet34", ()): 34_139_328,
    ("iresnet50", ()): 43_590_848,
    ("iresnet100", ()): 65_156_160,
    ("iresnet200", ()): 118_833_920,
    ("mobilefacenet", ()): 2_059_520,
    ("mobilefacenet", (("scale", 4), ("blocks", "2,8,12,4"))): 6_314_880,
    ("ghostfacenet", ()): 4_037_836,
    ("ghostfacenet", (("strides", 1),)): 4_060_260,
}


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("backbone,options", list(REFERENCE_PARAMS))
def test_parameter_counts_match_the_references(backbone, options):
    keras.utils.clear_session()
    basic, _ = build_model(2, backbone, "normdense", backbone_options=dict(options),
                           embedding_size=512)  # the references' width
    count = trainable_count(basic)
    assert abs(count - REFERENCE_PARAMS[backbone, options]) / count < 0.01
    # Exact but for the embedding BatchNorm's scale, which facekit fixes at 1 (no weight).
    if backbone != "ghostfacenet":
        assert REFERENCE_PARAMS[backbone, options] - count == 512
    assert basic.output.shape == (None, 512)


def test_reference_feature_maps_and_necks():
    registry = get_registry()
    assert {registry.get("backbone", f"iresnet{d}").neck for d in (18, 34, 50, 100, 200)} == {"e"}
    assert registry.get("backbone", "mobilefacenet").neck == "gdc"
    assert registry.get("backbone", "ghostfacenet").neck == "gdc"
    assert set(registry.names("neck")) >= {"gap", "flatten", "gdc", "e", "f", "gnap"}
    basic, _ = build_model(2, "mobilefacenet", "normdense", image_size=112,
                           backbone_options={"blocks": "1,1,1,1"})
    assert basic.get_layer("backbone").output.shape == (None, 7, 7, 512)
    stem2 = basic.get_layer("backbone").get_layer("stem2_conv")
    assert isinstance(stem2, GroupConv2D) and stem2.groups == 64  # arcface_torch's conv2_dw
    assert basic.get_layer("neck").get_layer("gdc_dw").kernel_size == (7, 7)
    embedding = basic.get_layer("embedding")
    assert isinstance(embedding, keras.layers.BatchNormalization) and not embedding.scale


# Small widths and images keep one training step of each quick.
SMALL_BACKBONES = [
    ("iresnet18", {"width": 0.25}),
    ("mobilefacenet", {"scale": 1, "blocks": "2,1,1,1", "features": 32}),
    ("ghostfacenet", {"width": 0.3, "strides": 1}),
]
TINY = {"scale": 1, "blocks": "1,1,1,1", "features": 16}


@pytest.mark.parametrize("backbone,neck,options", [
    (backbone, None, options) for backbone, options in SMALL_BACKBONES] + [
    ("mobilefacenet", neck, TINY) for neck in ("gap", "flatten", "gdc", "e", "f", "gnap")])
def test_one_training_step(backbone, neck, options):
    import tensorflow as tf  # an eager step: tracing a train function per model is slow

    keras.utils.clear_session()
    keras.utils.set_random_seed(0)
    basic, model = build_model(3, backbone, "normdense", neck=neck, image_size=48,
                               embedding_size=8, backbone_options=options)
    loss = get_registry().get("loss", "arcface").build()
    optimizer = keras.optimizers.SGD(0.1)
    images = np.random.default_rng(0).uniform(0, 255, (4, 48, 48, 3)).astype("float32")
    before = [w.numpy().copy() for w in basic.trainable_weights]
    with tf.GradientTape() as tape:
        value = loss(np.array([0, 1, 2, 0]), model(images, training=True))
    optimizer.apply(tape.gradient(value, model.trainable_weights), model.trainable_weights)
    assert np.isfinite(value.numpy())
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, basic.trainable_weights)]
    assert all(changed[-3:]) and sum(changed) > len(changed) // 2
    assert basic(images, training=False).shape == (4, 8)


@pytest.mark.parametrize("groups,channels,filters,strides,padding,data_format", [
    (4, 8, 12, 1, "same", "channels_last"),
    (64, 128, 128, 2, "valid", "channels_last"),  # MobileFaceNet's stem: 2 in, 2 out
    (2, 6, 4, 1, "same", "channels_first"),
])
def test_group_conv_equals_keras_grouped_conv(groups, channels, filters, strides, padding,
                                              data_format):
    import tensorflow as tf

    shape = (2, 9, 9, channels) if data_format == "channels_last" else (2, channels, 9, 9)
    x = tf.constant(np.random.default_rng(2).normal(size=shape).astype("float32"))
    options = dict(filters=filters, kernel_size=3, strides=strides, padding=padding,
                   groups=groups, use_bias=True, bias_initializer="random_normal")
    fast, reference = GroupConv2D(**options, data_format=data_format), keras.layers.Conv2D(
        **options, data_format="channels_last")
    fast.build(shape)
    reference.build((2, 9, 9, channels))
    assert [w.shape for w in fast.weights] == [w.shape for w in reference.weights]
    reference.set_weights(fast.get_weights())
    to_last = (lambda t: t) if data_format == "channels_last" else (
        lambda t: tf.transpose(t, (0, 2, 3, 1)))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_fast, y_reference = to_last(fast(x)), reference(to_last(x))
        fast_loss, reference_loss = tf.reduce_sum(y_fast ** 2), tf.reduce_sum(y_reference ** 2)
    np.testing.assert_allclose(y_fast, y_reference, rtol=1e-4, atol=1e-4)
    for fast_grad, reference_grad in zip(tape.gradient(fast_loss, [x, *fast.weights]),
                                         tape.gradient(reference_loss, [x, *reference.weights])):
        np.testing.assert_allclose(fast_grad, reference_grad, rtol=1e-3, atol=1e-3)
    assert GroupConv2D.from_config(fast.get_config()).get_config() == fast.get_config()


def test_norm_aware_pooling_matches_numpy():
    from facekit_plugins.necks.layers import NormAwarePooling

    x = np.random.default_rng(1).normal(size=(2, 3, 4, 5)).astype("float32")
    norms = np.sqrt((x ** 2).sum(-1, keepdims=True))
    expected = (x * norms.mean(axis=(1, 2), keepdims=True) / norms).mean(axis=(1, 2))
    np.testing.assert_allclose(NormAwarePooling()(x), expected, rtol=1e-5)
    # Per image: the others in the batch change nothing.
    np.testing.assert_allclose(NormAwarePooling()(x[:1]), expected[:1], rtol=1e-5)


def test_gdc_pointwise_and_no_embedding_bn():
    basic, _ = build_model(2, "mobilenetv2", "normdense", neck="gdc", image_size=32,
                           embedding_size=8, embedding_bn=False,
                           backbone_options={"alpha": 0.35},
                           neck_options={"pointwise": 24, "use_bias": True})
    neck = basic.get_layer("neck")
    assert neck.get_layer("pointwise_conv").filters == 24 and neck.get_layer("dense").use_bias
    assert isinstance(basic.get_layer("embedding"), keras.layers.Identity)


def test_configs_of_older_runs_read_pooling_as_the_neck():
    config = TrainConfig.from_dict({"pooling": "flatten", "epochs": 3})
    assert (config.neck, config.embedding_bn) == ("flatten", False)
    assert TrainConfig().embedding_bn and TrainConfig().neck is None


def test_face_models_load_in_a_fresh_process(tmp_path):
    images = np.random.default_rng(0).uniform(0, 255, (2, 48, 48, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    # The three small backbones, and MobileFaceNet's grouped stem (GroupConv2D).
    models = {backbone: (backbone, options, neck) for (backbone, options), neck in
              zip(SMALL_BACKBONES, ("gnap", None, "e"))}
    models["grouped"] = ("mobilefacenet", {"blocks": "1,1,1,1", "features": 16}, None)
    for name, (backbone, options, neck) in models.items():
        keras.utils.clear_session()
        basic, _ = build_model(2, backbone, "normdense", neck=neck, image_size=48,
                               embedding_size=8, backbone_options=options)
        np.save(tmp_path / f"{name}.npy", basic(images, training=False).numpy())
        basic.save(tmp_path / f"{name}.keras")
    script = textwrap.dedent(f"""
        import numpy as np, facekit
        images = np.load({str(tmp_path / 'images.npy')!r})
        for name in {list(models)!r}:
            model = facekit.load_model({str(tmp_path)!r} + f"/{{name}}.keras")
            np.testing.assert_allclose(model(images, training=False).numpy(),
                                       np.load({str(tmp_path)!r} + f"/{{name}}.npy"),
                                       rtol=1e-5, atol=1e-5)
        print("identical")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert "identical" in result.stdout, result.stderr[-3000:]


def test_the_head_follows_the_loss_unless_named(tiny_faces):
    from facekit.plan import plan_run

    def heads(**options):
        plan = plan_run(data=str(tiny_faces), backbone="mobilenetv2", **options)
        return [stage.head.name for stage in plan.stages]

    assert heads() == ["softmax"]
    assert heads(loss="adaface") == ["normdense"]
    assert heads(loss="arcface", head="subcenter") == ["subcenter"]
    assert heads(stages=[{"epochs": 1}, {"epochs": 1, "loss": "cosface"}]) == [
        "softmax", "normdense"]
