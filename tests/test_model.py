"""Model assembly, backbone options, and saved models loading in a fresh process."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import facekit
from facekit.errors import FacekitError
from facekit.model.build import build_model, embedding_model

SMALL = dict(image_size=32, embedding_size=16, backbone_options={"alpha": 0.35})


def test_basic_model_and_training_model_share_layers():
    basic, model = build_model(7, "mobilenetv2", "normdense", dropout=0.2, **SMALL)
    assert basic.output.shape == (None, 16)
    assert model.output.shape == (None, 7)
    assert model.get_layer("basic_model") is basic
    assert basic.get_layer("neck").get_layer("dropout").rate == 0.2
    assert embedding_model(model) is basic
    assert embedding_model(basic) is basic


def test_backbone_batchnorm_momentum_is_set():
    basic, _ = build_model(3, "mobilenetv2", "softmax", image_size=32,
                           backbone_options={"alpha": 0.35, "bn_momentum": 0.8})
    momenta = {layer.momentum for layer in basic.get_layer("backbone").layers
               if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.8}


def test_flatten_neck_and_unknown_neck():
    basic, _ = build_model(3, "resnet50v2", "softmax", image_size=32, neck="flatten",
                           embedding_size=8)
    assert basic.get_layer("neck").get_layer("pooling").__class__.__name__ == "Flatten"
    with pytest.raises(FacekitError, match="Unknown neck 'max'; choose one of: e, f, "):
        build_model(3, "mobilenetv2", "softmax", neck="max", **SMALL)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FacekitError, match="weights file .*nope.h5' does not exist"):
        build_model(3, "mobilenetv2", "softmax", image_size=32,
                    backbone_options={"weights": str(tmp_path / "nope.h5")})


def test_imagenet_download_failure_is_a_clear_error(monkeypatch, tmp_path):
    import urllib.error

    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    monkeypatch.setattr(file_utils.os.path, "expanduser", lambda p: str(tmp_path))
    with pytest.raises(FacekitError, match="Could not download the ImageNet weights"):
        build_model(3, "resnet50v2", "softmax", image_size=32,
                    backbone_options={"weights": "imagenet"})


def test_weights_file_is_loaded(tmp_path):
    from facekit_plugins.backbones.applications import build_application

    source = build_application("MobileNetV2", "tf", (32, 32, 3), "none", 0.9, alpha=0.35)
    path = tmp_path / "backbone.weights.h5"
    source.save_weights(path)
    loaded = build_application("MobileNetV2", "tf", (32, 32, 3), str(path), 0.9, alpha=0.35)
    for a, b in zip(source.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("head,loss", [("normdense", "arcface"), ("softmax", "softmax")])
def test_saved_model_loads_in_fresh_process_with_identical_outputs(tmp_path, head, loss):
    from facekit.registry import get_registry

    _, model = build_model(5, "mobilenetv2", head, **SMALL)
    model.compile(optimizer="adamax", loss=get_registry().get("loss", loss).build())
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "expected.npy", model.predict(images, verbose=0))
    model.save(tmp_path / "model.keras")
    _with_old_module_names(tmp_path / "model.keras", tmp_path / "old.keras")
    script = textwrap.dedent(f"""
        import numpy as np, facekit
        for name in ("model.keras", "old.keras"):  # old.keras: saved before the moves
            model = facekit.load_model({str(tmp_path)!r} + "/" + name, compile=True)
            assert type(model.loss).__module__ == "facekit_plugins.losses.margin", model.loss
            out = model.predict(np.load({str(tmp_path / 'images.npy')!r}), verbose=0)
            np.testing.assert_array_equal(out, np.load({str(tmp_path / 'expected.npy')!r}))
        print("identical")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert "identical" in result.stdout, result.stderr[-3000:]


# Where facekit 0.1's plugins defined their Keras objects, before they were grouped by kind.
OLD_MODULES = {"facekit_plugins.losses.margin": "facekit_plugins.keras_losses",
               "facekit_plugins.heads.normdense": "facekit_plugins.keras_layers",
               "facekit_plugins.backbones.blocks": "facekit_plugins.keras_layers",
               "facekit_plugins.necks.layers": "facekit_plugins.keras_necks",
               "facekit.model.losses": "facekit.model.state"}


def _with_old_module_names(source, target):
    """A copy of a .keras file whose config names the modules as facekit 0.1 saved them."""
    import zipfile

    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = old.read(item)
            if item.filename == "config.json":
                text = data.decode()
                for module, before in OLD_MODULES.items():
                    text = text.replace(f'"module": "{module}"', f'"module": "{before}"')
                assert "keras_losses" in text
                data = text.encode()
            new.writestr(item, data)


def test_load_model_errors(tmp_path):
    with pytest.raises(FacekitError, match="does not exist"):
        facekit.load_model(tmp_path / "missing.keras")
    (tmp_path / "junk.keras").write_text("junk")
    with pytest.raises(FacekitError, match="not a Keras 3 .keras model"):
        facekit.load_model(tmp_path / "junk.keras")


def test_build_model_has_the_defaults_of_train():
    import inspect

    from facekit.config import OPTIONS, TrainConfig
    from facekit.plan import with_rules
    from facekit.registry import get_registry

    defaults = {name: p.default for name, p in inspect.signature(build_model).parameters.items()
                if p.default is not inspect.Parameter.empty}
    for name in ("backbone", "image_size", "embedding_size", "dropout", "embedding_bn"):
        assert defaults[name] == OPTIONS[name].default, name
    assert defaults["head"] == with_rules(TrainConfig(), get_registry()).head
