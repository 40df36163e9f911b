"""A real third-party plugin package, pip-installed, listed and trained with."""

import json

from tests.conftest import run_facekit


def test_installed_plugin_is_listed_with_its_distribution(tinynet_plugin):
    result = run_facekit("list-plugins", "--json", env={"PYTHONPATH": str(tinynet_plugin)})
    assert result.returncode == 0, result.stderr
    [tinynet] = [c for c in json.loads(result.stdout)["components"] if c["name"] == "tinynet"]
    assert tinynet["kind"] == "backbone"
    assert tinynet["provider"] == {"entry_point": "tinynet", "distribution": "facekit-tinynet",
                                   "version": "0.2.0"}
    assert tinynet["options"] == {"width": 16, "depth": 3}
    assert tinynet["summary"].startswith("A few strided conv-BN-ReLU blocks")


def test_train_one_step_with_the_plugin_backbone(tinynet_plugin, tiny_faces, tmp_path):
    result = run_facekit("train", "--data", str(tiny_faces), "--backbone", "tinynet",
                         "--backbone-opt", "width=4", "--image-size", "32", "--batch-size", "8",
                         "--epochs", "1", "--steps-per-epoch", "1", "--embedding-size", "8",
                         "--output", str(tmp_path / "run"),
                         env={"PYTHONPATH": str(tinynet_plugin)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "basic_model.keras").is_file()


def test_disabled_plugin_is_unknown(tinynet_plugin, tiny_faces):
    result = run_facekit("train", "--data", str(tiny_faces), "--backbone", "tinynet",
                         env={"PYTHONPATH": str(tinynet_plugin),
                              "FACEKIT_DISABLE_PLUGINS": "tinynet"})
    assert result.returncode == 2
    assert "Unknown backbone 'tinynet'" in result.stderr
