"""Multi-worker training: two real `facekit train` workers on loopback."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import pytest

import facekit
from facekit.config import TrainConfig
from facekit.fit.distributed import loopback_tf_configs
from facekit.errors import FacekitError
from facekit.fit.run import DataPlan, check_sharding

TINY_CLUSTER = ["--backbone", "tinynet", "--image-size", "32", "--batch-size", "8",
                "--embedding-size", "16", "--steps-per-epoch", "3", "--val-split", "0.2",
                "--bn-recalibration", "2", "--collective-timeout", "30"]


def _launch(tmp_path, args, plugin, name):
    """Start a two-worker cluster of `facekit train ARGS`; returns the processes."""
    processes = []
    for index, tf_config in enumerate(loopback_tf_configs(2)):
        env = {**os.environ, "PYTHONPATH": str(plugin), "TF_CPP_MIN_LOG_LEVEL": "2",
               "TF_CONFIG": tf_config}
        log = open(tmp_path / f"{name}-{index}.log", "w")
        processes.append(subprocess.Popen([sys.executable, "-m", "facekit", "train", *args],
                                          env=env, stdout=log, stderr=subprocess.STDOUT))
    return processes


def _wait(processes, timeout):
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(timeout=max(1, deadline - time.monotonic())) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()


def _log(tmp_path, name, index):
    return (tmp_path / f"{name}-{index}.log").read_text()


def test_two_workers_train_the_same_model_and_resume(tmp_path, tiny_faces, tinynet_plugin):
    run = tmp_path / "run"
    args = ["--data", str(tiny_faces), "--output", str(run), "--epochs", "2", *TINY_CLUSTER]
    codes = _wait(_launch(tmp_path, args, tinynet_plugin, "train"), timeout=300)
    assert codes == [0, 0], _log(tmp_path, "train", 0)[-3000:] + _log(tmp_path, "train", 1)[-3000:]
    assert "over 2 workers" in _log(tmp_path, "train", 0)
    for name in ("model.keras", "basic_model.keras", "history.csv", "config.toml",
                 "training.png"):
        assert (run / name).is_file(), name
    assert not (run / "workers" / "1" / "history.csv").exists()  # only the chief writes it
    chief = facekit.load_model(run / "model.keras").get_weights()
    other = facekit.load_model(run / "workers" / "1" / "model.keras").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(chief, other))  # BatchNorm too

    codes = _wait(_launch(tmp_path, ["--resume", str(run), "--epochs", "3"], tinynet_plugin,
                          "resume"), timeout=300)
    assert codes == [0, 0], _log(tmp_path, "resume", 0)[-3000:]
    assert "Epoch 3/3" in _log(tmp_path, "resume", 1)
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 3


def test_a_dead_worker_ends_the_other_with_a_clear_error(tmp_path, tiny_faces, tinynet_plugin):
    run = tmp_path / "run"
    args = ["--data", str(tiny_faces), "--output", str(run), "--epochs", "1000",
            *TINY_CLUSTER]
    chief, other = _launch(tmp_path, args, tinynet_plugin, "kill")
    try:
        deadline = time.monotonic() + 240
        while not (run / "checkpoints" / "state.json").exists():
            assert time.monotonic() < deadline and chief.poll() is None, _log(tmp_path, "kill", 0)
            time.sleep(0.5)
        other.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        code = chief.wait(timeout=120)
        waited = time.monotonic() - killed
    finally:
        for p in (chief, other):
            if p.poll() is None:
                p.kill()
    log = _log(tmp_path, "kill", 0)
    assert code == 2, log[-3000:]
    assert "Lost contact with another worker of the cluster" in log
    assert f"facekit train --resume {run}" in log
    print(f"the chief stopped {waited:.1f} s after the other worker was killed")


@dataclass
class _Cluster:
    workers: int
    index: int = 0
    chief: bool = True


@dataclass
class _Devices:
    replicas: int
    cluster: _Cluster


def test_data_that_cannot_be_shared_evenly_is_refused(tmp_path):
    devices = _Devices(replicas=4, cluster=_Cluster(workers=4))
    folder = DataPlan(classes=["a"], train_images=1000, val_images=0, summary="")
    with pytest.raises(FacekitError, match="--batch-size 30 cannot be split evenly"):
        check_sharding(folder, TrainConfig(batch_size=30), devices)
    small = DataPlan(classes=["a"], train_images=100, val_images=0, summary="")
    with pytest.raises(FacekitError, match="too few to give each of 4 workers"):
        check_sharding(small, TrainConfig(batch_size=32), devices)
    packed = DataPlan(classes=["a"], train_images=1000, val_images=0, summary="",
                      shards=tmp_path, shard_files=2)
    with pytest.raises(FacekitError, match="2 shard\\(s\\) for 4 workers"):
        check_sharding(packed, TrainConfig(batch_size=32), devices)


def test_tf_config_decides_whether_to_train_on_a_cluster(monkeypatch):
    from facekit.fit.distributed import find_cluster

    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 0}}))
    assert find_cluster("auto") is None  # one worker: train alone
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(FacekitError, match="TF_CONFIG is not valid JSON"):
        find_cluster("auto")
    assert find_cluster("none") is None
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(FacekitError, match="inside a Slurm job"):
        find_cluster("slurm")
