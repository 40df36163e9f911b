"""Where a multi-worker run is: this process's place in its cluster, read without TensorFlow.

Every machine runs the same ``facekit train`` command; the standard
``TF_CONFIG`` environment variable (or Slurm's, with ``--cluster slurm``) tells
each process the cluster and its own place in it.  Planning reads it here, before
TensorFlow loads; facekit.fit.distributed builds the strategy from it.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass

from facekit.errors import FacekitError


@dataclass(frozen=True)
class Cluster:
    """This process's place in a multi-worker cluster (read without TensorFlow)."""

    kind: str  # "tf_config" or "slurm": where the cluster is described
    workers: int
    index: int  # this process's input pipeline: 0 .. workers-1; the chief is 0

    @property
    def chief(self) -> bool:
        return self.index == 0


def find_cluster(cluster: str | None) -> Cluster | None:
    """The multi-worker cluster this process belongs to, or None to train alone.

    ``auto`` reads TF_CONFIG when it lists more than one task; ``slurm`` reads
    Slurm's environment; ``none`` ignores both.
    """
    if cluster == "none":
        return None
    if cluster == "slurm":
        if "SLURM_JOB_ID" not in os.environ:
            raise FacekitError("--cluster slurm needs to run inside a Slurm job (srun); "
                               "SLURM_JOB_ID is not set.")
        return Cluster("slurm", int(os.environ.get("SLURM_NTASKS", "1")),
                       int(os.environ.get("SLURM_PROCID", "0")))
    tasks, task = _tf_config()
    if len(tasks) < 2:
        return None
    if task not in tasks:
        raise FacekitError(f"This task ({task[0]} {task[1]}) is not a chief or worker of the "
                           "cluster in TF_CONFIG.")
    return Cluster("tf_config", len(tasks), tasks.index(task))


def _tf_config() -> tuple[list[tuple[str, int]], tuple[str, int] | None]:
    """TF_CONFIG's chief and worker tasks in input-pipeline order, and this task."""
    text = os.environ.get("TF_CONFIG", "")
    if not text:
        return [], None
    try:
        config = json.loads(text)
        spec, task = config.get("cluster", {}), config.get("task", {})
        tasks = [(kind, i) for kind in ("chief", "worker") for i in range(len(spec.get(kind, [])))]
        return tasks, (task.get("type"), int(task.get("index", 0)))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        raise FacekitError("TF_CONFIG is not valid JSON of a cluster and a task; see "
                           "docs/distributed.md for its form.") from None


def loopback_tf_configs(workers: int) -> list[str]:
    """TF_CONFIG values for a cluster of ``workers`` processes on this machine, on free
    ports: for trying multi-worker training locally, and for the tests."""
    sockets = [socket.socket() for _ in range(workers)]
    for s in sockets:
        s.bind(("localhost", 0))
    hosts = [f"localhost:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    return [json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}})
            for i in range(workers)]
