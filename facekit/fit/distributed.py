"""Training on several machines with tf.distribute.MultiWorkerMirroredStrategy.

Every machine runs the same ``facekit train`` command; the standard
``TF_CONFIG`` environment variable (or Slurm's, with ``--cluster slurm``)
tells each process the cluster and its own place in it.  Worker 0 (or the
``chief`` task) is the chief: it alone writes the run folder's shared files.

Keras 3's ``Model.fit`` does not run under this strategy as shipped
(keras-team/keras#20585, tensorflow/tensorflow#72388); ``multi_worker_fit``
applies the two narrow fixes it needs around one fit and undoes them after,
so facekit keeps one training path (``Model.fit`` with the same callbacks) for
one worker or many.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time

from facekit.cluster import Cluster
from facekit.errors import FacekitError

# The Keras versions the multi-worker fixes were tested with; pyproject.toml
# bounds keras to the same range (a test keeps the two equal).
TESTED_KERAS = (">=3.15", "<3.16")


def multi_worker_strategy(cluster: Cluster, collective_timeout: float,
                          start_timeout: float, verbose: bool = True):
    """MultiWorkerMirroredStrategy whose collectives give up after
    ``collective_timeout``, so a dead worker ends the others with an error.

    Creating the strategy blocks inside TensorFlow, holding the interpreter,
    until every worker has started: no signal handler runs and nothing is
    printed there.  So each worker first waits in Python: it listens on its own
    cluster address (a placeholder for its TensorFlow server) until every other
    worker's address answers, saying which workers it waits for, stopping on
    SIGINT/SIGTERM and giving up after ``start_timeout`` seconds.
    """
    import tensorflow as tf

    if cluster.kind == "slurm":
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver()
    else:
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    spec = resolver.cluster_spec().as_dict()
    addresses = [address for kind in ("chief", "worker") for address in spec.get(kind, [])]
    with _listening(addresses[cluster.index]):
        _wait_for_workers(addresses, cluster.index, start_timeout, verbose)
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=collective_timeout)
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver,
                                                     communication_options=options)


@contextlib.contextmanager
def _listening(address: str):
    """Accept connections on this worker's cluster port for the block, so the other
    workers see it has started; its TensorFlow server takes the port over after."""
    port = int(address.rpartition(":")[2])
    try:
        if socket.has_dualstack_ipv6():
            server = socket.create_server(("", port), family=socket.AF_INET6,
                                          dualstack_ipv6=True)
        else:
            server = socket.create_server(("", port))
    except OSError as exc:
        raise FacekitError(f"This worker's cluster address {address} cannot be used "
                           f"({exc.strerror}); is another process using the port?") from None
    with server:
        yield


def _wait_for_workers(addresses: list[str], own: int, timeout: float, verbose: bool) -> None:
    started = time.monotonic()
    next_report = started + 3.0  # a cluster that starts at once prints nothing
    with _signals_noted() as received:
        while True:
            missing = _missing(addresses, own)
            if not missing:
                return
            waited = time.monotonic() - started
            names = _names(missing)
            if received:
                raise FacekitError(f"Stopped by {received[0]} after {waited:.0f} s waiting for "
                                   f"{names} to start; nothing was trained.")
            if waited >= timeout:
                raise FacekitError(
                    f"Gave up after {timeout:g} s waiting for {names} to start; start every "
                    "worker with the same command (or raise --cluster-start-timeout).")
            if verbose and time.monotonic() >= next_report:
                print(f"Worker {own} is waiting for {names} to start (giving up after "
                      f"{timeout:g} s; Ctrl-C stops).", flush=True)
                next_report = time.monotonic() + 30.0
            time.sleep(0.5)


def _missing(addresses: list[str], own: int) -> list[tuple[int, str]]:
    """The other workers whose address accepts no connection yet."""
    missing = []
    for index, address in enumerate(addresses):
        if index == own:
            continue
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                pass
        except (OSError, ValueError):
            missing.append((index, address))
    return missing


def _names(missing: list[tuple[int, str]]) -> str:
    """'worker 1 (host:port)', or 'workers 1 (host:port), 2 (host:port)'."""
    listed = ", ".join(f"{index} ({address})" for index, address in missing)
    return ("worker " if len(missing) == 1 else "workers ") + listed


@contextlib.contextmanager
def _signals_noted():
    """SIGINT and SIGTERM noted in a list instead of acted on, for the block
    (only in the main thread, where Python runs signal handlers)."""
    received, previous = [], {}
    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGINT, signal.SIGTERM):
            previous[number] = signal.signal(
                number, lambda n, _: received.append(signal.Signals(n).name))
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def multi_worker_fit(model):
    """Let ``model.fit`` (and its validation) run under MultiWorkerMirroredStrategy,
    for the block only; both changes are undone after it.

    1. Before training, Keras averages the first input batch over the workers
       just to learn its shapes, which fails on the input's PerReplica values.
       A model that records no strategy of its own skips that step; it still
       trains with the strategy of the scope ``fit`` runs in (facekit's models
       are already built, so nothing needs the step).
    2. Keras averages each step's scalar metrics over the workers with
       ``axis=0``, which scalars do not have; the fix averages them whole.

    Both touch private Keras internals, so Keras outside ``TESTED_KERAS`` is
    refused in one sentence instead of failing somewhere inside ``fit``.
    """
    from keras.src.backend.tensorflow import trainer

    _require_tested_keras(trainer)
    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if (reduction in ("auto", "mean")
                and trainer._collective_all_reduce_multi_worker(strategy)):
            import tensorflow as tf

            return tf.nest.map_structure(
                lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return original(values, strategy, reduction)

    own_strategy = model._distribute_strategy
    trainer.reduce_per_replica, model._distribute_strategy = reduce_per_replica, None
    try:
        yield
    finally:
        trainer.reduce_per_replica, model._distribute_strategy = original, own_strategy


def _require_tested_keras(trainer) -> None:
    import keras

    version = tuple(int(part) for part in keras.__version__.split(".")[:2])
    low, high = (tuple(int(p) for p in bound.lstrip("<>=").split(".")) for bound in TESTED_KERAS)
    internals = all(hasattr(trainer, name) for name in
                    ("reduce_per_replica", "_collective_all_reduce_multi_worker"))
    if not (low <= version < high and internals):
        tested = ",".join(TESTED_KERAS)
        raise FacekitError(
            f"Multi-worker training works around Keras internals tested only with Keras "
            f"{tested}, and this is Keras {keras.__version__}; install a tested version "
            f"(pip install 'keras{tested}').")


def worker_failure(exc: Exception) -> bool:
    """Whether ``exc`` is how a collective operation reports a lost or dead peer."""
    import tensorflow as tf

    return isinstance(exc, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                            tf.errors.CancelledError, tf.errors.AbortedError,
                            tf.errors.InternalError))
