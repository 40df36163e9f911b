"""Shared fixtures: small images, few classes, few steps, so the suite stays fast on a CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep the demo-data cache of the tests out of the user's home."""
    monkeypatch.setenv("FACEKIT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_faces(tmp_path_factory) -> Path:
    """4 identities x 10 images of 32x32 synthetic faces."""
    from facekit.data.demo import write_demo_dataset

    return write_demo_dataset(tmp_path_factory.mktemp("data") / "faces", identities=4,
                              images_per_identity=10, size=32, seed=1)


@pytest.fixture(scope="session")
def reference():
    """Images and the embeddings insightface's own arcface_torch code (PyTorch, and
    onnxruntime on its ONNX export) computed for tests/fixtures/arcface_torch."""
    import numpy as np

    return dict(np.load(REPO / "tests" / "fixtures" / "arcface_torch" / "reference.npz"))


@pytest.fixture(scope="session")
def tinynet_plugin(tmp_path_factory) -> Path:
    """The example third-party plugin, pip-installed for real into a target folder.

    Its small backbone also keeps training tests fast: Keras needs ~25 s on
    this CPU just to trace a train step of a keras.applications backbone.
    """
    from facekit.registry import get_registry

    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(target),
                    str(REPO / "tests" / "plugin_example")], check=True, timeout=300)
    sys.path.insert(0, str(target))
    get_registry.cache_clear()
    yield target
    sys.path.remove(str(target))
    get_registry.cache_clear()


def run_facekit(*args, env=None, timeout=300, cwd=None):
    """Run the facekit CLI in a fresh interpreter; returns the CompletedProcess."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, "-m", "facekit", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=cwd)


def on_logical_cpus(body: str, plugin: Path, devices: int = 2, timeout=300):
    """Run ``body`` (Python, dedented) in a fresh interpreter whose CPU is split into
    ``devices`` logical devices, with the tinynet plugin importable: how the multi-device
    paths are tested here (two strategies in one process collide in their collectives).
    ``body`` prints ``RESULT`` and a JSON value: returned, with the process's output."""
    import textwrap

    script = ("import json, tensorflow as tf\n"
              "cpu = tf.config.list_physical_devices('CPU')[0]\n"
              "tf.config.set_logical_device_configuration(\n"
              f"    cpu, [tf.config.LogicalDeviceConfiguration()] * {devices})\n"
              "import facekit\n" + textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": str(plugin), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.split("RESULT", 1)[1]), done.stdout


def invoke_facekit(*args):
    """Run a facekit command in this process (no interpreter and TensorFlow start-up):
    for tests that need a command's output, not its process; errors raise."""
    from typer.testing import CliRunner

    from facekit.cli import app

    result = CliRunner().invoke(app, [str(arg) for arg in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


# Small, fast settings for training tests (with the tinynet_plugin fixture); light
# augmentation traces fewer ops than the default strong one (test_augment covers both).
TINY_TRAIN = dict(image_size=32, batch_size=8, epochs=1, steps_per_epoch=2,
                  embedding_size=16, backbone="tinynet", bn_recalibration_batches=2,
                  augment="light", verbose=0)
