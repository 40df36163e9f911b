"""GPU-path code on CPU: mixed precision, and MirroredStrategy over two logical devices."""

import numpy as np

import facekit
from tests.conftest import TINY_TRAIN, on_logical_cpus


def test_mixed_precision_keeps_embedding_and_loss_float32(tmp_path, tiny_faces,
                                                          tinynet_plugin):
    import keras

    result = facekit.train(data=str(tiny_faces), output=str(tmp_path / "run"),
                           mixed_precision=True, **{**TINY_TRAIN, "epochs": 2})
    assert keras.config.dtype_policy().name == "float32"  # restored after the run
    assert all(np.isfinite(result.history["loss"]))
    model = facekit.load_model(result.run_dir / "model.keras")
    basic = model.get_layer("basic_model")
    assert basic.get_layer("backbone").layers[2].dtype_policy.name == "mixed_bfloat16"
    assert basic.get_layer("embedding").dtype_policy.name == "float32"
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert basic.predict(images, verbose=0).dtype == np.float32
    assert model.predict(images, verbose=0).dtype == np.float32


def test_mirrored_strategy_on_two_logical_cpus(tmp_path, tiny_faces, tinynet_plugin):
    history, output = on_logical_cpus(f"""
        result = facekit.train(data={str(tiny_faces)!r}, output={str(tmp_path / 'run')!r},
                               devices="cpu:0,cpu:1", backbone="tinynet", image_size=32,
                               batch_size=8, epochs=2, steps_per_epoch=2, embedding_size=8,
                               bn_recalibration_batches=2, verbose=1, val_split=0.2)
        print("RESULT", json.dumps(result.history))
    """, tinynet_plugin)
    assert "Training on 2 devices (MirroredStrategy)" in output
    assert len(history["loss"]) == 2 and all(np.isfinite(history["loss"]))
    assert len(history["val_loss"]) == 2
    assert facekit.load_model(tmp_path / "run" / "basic_model.keras") is not None


def test_unknown_device_is_a_clear_error(tiny_faces, tmp_path):
    import pytest

    with pytest.raises(facekit.FacekitError, match="Unknown device\\(s\\) /gpu:7"):
        facekit.train(data=str(tiny_faces), devices="gpu:7", output=str(tmp_path / "r"),
                      verbose=0)


def test_margin_losses_with_state_and_randomness_on_two_replicas(tmp_path, tiny_faces,
                                                                tinynet_plugin):
    """ElasticFace+ draws margins, CurricularFace and AdaFace update their state in
    each replica (averaged over replicas): all under MirroredStrategy."""
    result, _ = on_logical_cpus(f"""
        stages = [{{"loss": "elasticface-arc", "loss_options": {{"plus": True}}, "epochs": 1}},
                  {{"loss": "curricularface", "epochs": 1}}, {{"loss": "adaface", "epochs": 1}}]
        result = facekit.train(data={str(tiny_faces)!r}, output={str(tmp_path / 'run')!r},
                               devices="cpu:0,cpu:1", backbone="tinynet", image_size=32,
                               batch_size=8, steps_per_epoch=2, embedding_size=8,
                               bn_recalibration_batches=0, verbose=0, val_split=0.0,
                               stages=stages)
        model = facekit.load_model(result.model_path)
        print("RESULT", json.dumps({{"loss": result.history["loss"],
              "state": [float(v) for v in model.get_layer("loss_state").get_weights()]}}))
    """, tinynet_plugin)
    assert len(result["loss"]) == 3 and all(np.isfinite(result["loss"]))
    assert result["state"] != [20.0, 100.0]  # AdaFace's statistics moved
