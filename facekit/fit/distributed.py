"""Training on several machines with tf.distribute.MultiWorkerMirroredStrategy.

Every machine runs the same ``facekit train`` command; the standard
``TF_CONFIG`` environment variable (or Slurm's, with ``--cluster slurm``)
tells each process the cluster and its own place in it.  Worker 0 (or the
``chief`` task) is the chief: it alone writes the run folder's shared files.

Keras 3's ``Model.fit`` does not run under this strategy as shipped
(keras-team/keras#20585, tensorflow/tensorflow#72388); ``enable_multi_worker_fit``
applies the two narrow fixes it needs, so facekit keeps one training path
(``Model.fit`` with the same callbacks) for one worker or many.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from facekit.errors import FacekitError


@dataclass
class Cluster:
    resolver: object  # a tf.distribute.cluster_resolver.ClusterResolver
    workers: int
    index: int  # this process's input pipeline: 0 .. workers-1; the chief is 0

    @property
    def chief(self) -> bool:
        return self.index == 0


def find_cluster(cluster: str | None) -> Cluster | None:
    """The multi-worker cluster this process belongs to, or None to train alone.

    ``auto`` reads TF_CONFIG when it lists more than one task; ``slurm`` asks
    Slurm's environment; ``none`` ignores both.
    """
    import tensorflow as tf

    if cluster == "none":
        return None
    if cluster == "slurm":
        if "SLURM_JOB_ID" not in os.environ:
            raise FacekitError("--cluster slurm needs to run inside a Slurm job (srun); "
                               "SLURM_JOB_ID is not set.")
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver()
    else:
        if not _tf_config_tasks():
            return None
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    spec = resolver.cluster_spec().as_dict()
    tasks = [(kind, i) for kind in ("chief", "worker") for i in range(len(spec.get(kind, [])))]
    if (resolver.task_type, resolver.task_id) not in tasks:
        raise FacekitError(f"This task ({resolver.task_type} {resolver.task_id}) is not a "
                           "chief or worker of the cluster in TF_CONFIG.")
    index = tasks.index((resolver.task_type, resolver.task_id))
    return Cluster(resolver, len(tasks), index)


def _tf_config_tasks() -> int:
    """How many chief and worker tasks TF_CONFIG lists (0 without a cluster)."""
    text = os.environ.get("TF_CONFIG", "")
    if not text:
        return 0
    try:
        spec = json.loads(text).get("cluster", {})
    except (json.JSONDecodeError, AttributeError):
        raise FacekitError("TF_CONFIG is not valid JSON; see docs/distributed.md for its "
                           "form.") from None
    tasks = len(spec.get("chief", [])) + len(spec.get("worker", []))
    return tasks if tasks > 1 else 0


def loopback_tf_configs(workers: int) -> list[str]:
    """TF_CONFIG values for a cluster of ``workers`` processes on this machine, on free
    ports: for trying multi-worker training locally, and for the tests."""
    import socket

    sockets = [socket.socket() for _ in range(workers)]
    for s in sockets:
        s.bind(("localhost", 0))
    hosts = [f"localhost:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    return [json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}})
            for i in range(workers)]


def multi_worker_strategy(cluster: Cluster, timeout_seconds: float):
    """MultiWorkerMirroredStrategy whose collectives give up after ``timeout_seconds``,
    so a dead worker ends the others with an error instead of a hang."""
    import tensorflow as tf

    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_seconds)
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=cluster.resolver,
                                                     communication_options=options)


def enable_multi_worker_fit(model) -> None:
    """Let ``model.fit`` and ``model.evaluate`` run under MultiWorkerMirroredStrategy.

    1. Before training, Keras averages the first input batch over the workers
       just to learn its shapes, which fails on the input's PerReplica values.
       A model that records no strategy of its own skips that step; it still
       trains with the strategy of the scope ``fit`` runs in (facekit's models
       are already built, so nothing needs the step).
    2. Keras averages each step's scalar metrics over the workers with
       ``axis=0``, which scalars do not have; the fix averages them whole.
    """
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer.reduce_per_replica, "facekit_fix", False) is False:
        original = trainer.reduce_per_replica

        def reduce_per_replica(values, strategy, reduction):
            if (reduction in ("auto", "mean")
                    and trainer._collective_all_reduce_multi_worker(strategy)):
                import tensorflow as tf

                return tf.nest.map_structure(
                    lambda value: strategy.reduce("MEAN", value, axis=None), values)
            return original(values, strategy, reduction)

        reduce_per_replica.facekit_fix = True
        trainer.reduce_per_replica = reduce_per_replica
    model._distribute_strategy = None


def worker_failure(exc: Exception) -> bool:
    """Whether ``exc`` is how a collective operation reports a lost or dead peer."""
    import tensorflow as tf

    return isinstance(exc, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                            tf.errors.CancelledError, tf.errors.AbortedError,
                            tf.errors.InternalError))

