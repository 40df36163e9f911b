"""Multi-worker training: two real `facekit train` workers on loopback."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import facekit
from facekit.cluster import loopback_tf_configs
from facekit.errors import FacekitError
from facekit.data.sources import FolderSource, ShardSource
from facekit.fit.run import check_sharing

TINY_CLUSTER = ["--backbone", "tinynet", "--image-size", "32", "--batch-size", "8",
                "--embedding-size", "16", "--steps-per-epoch", "3", "--val-split", "0.2",
                "--bn-recalibration", "2", "--collective-timeout", "30"]


def _launch(tmp_path, args, plugin, name, cache=None):
    """Start a two-worker cluster of `facekit train ARGS`; returns the processes.
    ``cache``: a facekit cache folder both workers share (default: the tests' own)."""
    processes = []
    for index, tf_config in enumerate(loopback_tf_configs(2)):
        env = {**os.environ, "PYTHONPATH": str(plugin), "TF_CPP_MIN_LOG_LEVEL": "2",
               "TF_CONFIG": tf_config, **({"FACEKIT_CACHE": str(cache)} if cache else {})}
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
    """With the partial-fc head, whose class centers are sharded over the workers'
    replicas and gathered whole into each worker's checkpoint (the softmax head
    trains on two workers in the next test).  Both workers index the same folder
    at once, into one fresh cache."""
    run, cache = tmp_path / "run", tmp_path / "fresh-cache"
    args = ["--data", str(tiny_faces), "--output", str(run), "--epochs", "2", *TINY_CLUSTER,
            "--head", "partial-fc", "--head-opt", "sample_rate=0.5", "--loss", "arcface"]
    codes = _wait(_launch(tmp_path, args, tinynet_plugin, "train", cache), timeout=300)
    assert codes == [0, 0], _log(tmp_path, "train", 0)[-3000:] + _log(tmp_path, "train", 1)[-3000:]
    assert "over 2 workers" in _log(tmp_path, "train", 0)
    assert len(list((cache / "index").glob("*.feather"))) == 1  # one cache, written whole
    assert not [p for p in (cache / "index").iterdir() if "tmp" in p.name]
    for name in ("model.keras", "basic_model.keras", "history.csv", "config.toml",
                 "training.png"):
        assert (run / name).is_file(), name
    assert not (run / "workers" / "1" / "history.csv").exists()  # only the chief writes it
    chief, other = (facekit.load_model(folder / "model.keras", compile=True)
                    for folder in (run, run / "workers" / "1"))
    weights = [model.get_weights() + model.get_layer("partial_fc").get_weights()
               for model in (chief, other)]
    assert all(np.array_equal(a, b) for a, b in zip(*weights))  # BatchNorm and centers too
    assert weights[0][-1].shape == (4, 16)  # the whole matrix, in each worker's checkpoint

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


def test_data_that_cannot_be_shared_evenly_is_refused(tmp_path, tiny_faces):
    devices = _Devices(replicas=4, cluster=_Cluster(workers=4))
    folder = FolderSource(tiny_faces, val_split=0.0, split_by="images", seed=0)
    folder.train_images = 1000
    with pytest.raises(FacekitError, match="batch_size 30 cannot be split evenly"):
        check_sharing(folder, 30, devices)
    folder.train_images = 100
    with pytest.raises(FacekitError, match="too few to give each of 4 workers"):
        check_sharing(folder, 32, devices)
    packed = ShardSource(tmp_path, val_split=0.0, split_by="images", seed=0)
    packed.shard_files = 2
    with pytest.raises(FacekitError, match="2 shard\\(s\\) for 4 workers"):
        check_sharing(packed, 32, devices)


def test_tf_config_decides_whether_to_train_on_a_cluster(monkeypatch):
    from facekit.cluster import find_cluster

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


def test_a_worker_waiting_for_a_missing_one_says_so_and_stops_on_a_signal(tmp_path,
                                                                           tiny_faces):
    """Only one of two workers is started: it names the one it waits for, and SIGTERM
    ends the wait with a sentence and a non-zero exit code."""
    chief_config, _ = loopback_tf_configs(2)
    other = json.loads(chief_config)["cluster"]["worker"][1]
    log = tmp_path / "waiting.log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": chief_config}
    with open(log, "w") as out:
        worker = subprocess.Popen([sys.executable, "-m", "facekit", "train", "--data",
                                   str(tiny_faces), "--output", str(tmp_path / "run")],
                                  env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while f"waiting for worker 1 ({other})" not in log.read_text():
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    text = log.read_text()
    assert code == 2, text
    assert "Stopped by SIGTERM after" in text
    assert f"waiting for worker 1 ({other}) to start; nothing was trained." in text
    assert "Traceback" not in text


def test_a_worker_gives_up_waiting_after_the_start_timeout(tmp_path, tiny_faces):
    chief_config, _ = loopback_tf_configs(2)
    other = json.loads(chief_config)["cluster"]["worker"][1]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": chief_config}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "facekit", "train", "--data",
                             str(tiny_faces), "--cluster-start-timeout", "4"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert (f"Error: Gave up after 4 s waiting for worker 1 ({other}) to start; start every "
            "worker with the same command (or raise --cluster-start-timeout).") in result.stderr
    assert time.monotonic() - started < 100


def test_the_keras_fixes_are_undone_after_the_fit_and_fenced_by_version(monkeypatch):
    import keras
    from keras.src.backend.tensorflow import trainer

    from facekit.fit.distributed import TESTED_KERAS, multi_worker_fit

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    original, strategy = trainer.reduce_per_replica, model._distribute_strategy
    with multi_worker_fit(model):
        assert trainer.reduce_per_replica is not original
        assert model._distribute_strategy is None
    assert trainer.reduce_per_replica is original
    assert model._distribute_strategy is strategy

    monkeypatch.setattr(keras, "__version__", "3.99.0")
    with pytest.raises(FacekitError, match="tested only with Keras >=3.15,<3.16, and this is "
                                           "Keras 3.99.0; install a tested version"):
        with multi_worker_fit(model):
            pass
    assert trainer.reduce_per_replica is original
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert f'"keras{",".join(TESTED_KERAS)}"' in pyproject
