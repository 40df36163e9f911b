"""Device setup, in one place, before anything else touches a GPU.

Memory growth on every GPU (TensorFlow otherwise takes all GPU memory up
front), the mixed-precision policy, and the distribution strategy: one
device, MirroredStrategy over several GPUs (or the devices named by
``--devices``), or MultiWorkerMirroredStrategy over the machines of a cluster
(see facekit.fit.distributed).
"""

from __future__ import annotations

from dataclasses import dataclass

from facekit.errors import FacekitError


@dataclass
class Devices:
    strategy: object  # a tf.distribute.Strategy
    replicas: int  # in the whole cluster
    policy: str  # the Keras dtype policy of the run
    cluster: object = None  # a facekit.fit.distributed.Cluster when training on several workers
    gpus: int = 0  # on this machine

    @property
    def chief(self) -> bool:
        """Whether this process writes the run folder's shared files."""
        return self.cluster is None or self.cluster.chief

    def describe(self) -> str:
        """One phrase for the start of a run: what it trains on."""
        precision = "" if self.policy == "float32" else f", {self.policy}"
        if self.cluster is not None:
            return (f"{self.replicas} replicas over {self.cluster.workers} workers "
                    f"(MultiWorkerMirroredStrategy; this is worker {self.cluster.index})"
                    f"{precision}")
        if self.replicas > 1:
            return f"{self.replicas} devices (MirroredStrategy){precision}"
        if self.gpus:
            return f"1 GPU{precision}"
        return f"the CPU (no GPU found){precision}"

    def jit_compile(self, requested: bool | None):
        """XLA for the train step: as requested, else off on CPUs (slower there, see
        benchmarks/jit_compile.py) and Keras' own choice on GPUs."""
        if requested is not None:
            return requested
        return "auto" if self.gpus else False


def setup_devices(devices: str | None = None, mixed_precision: bool = False, cluster=None,
                  collective_timeout: float = 300.0, start_timeout: float = 300.0,
                  verbose: bool = True) -> Devices:
    """Memory growth, then the strategy: MultiWorkerMirroredStrategy over ``cluster``
    (a facekit.fit.distributed.Cluster), else ``devices`` ("auto", or "gpu:0,gpu:1")."""
    import tensorflow as tf

    from facekit.fit.distributed import multi_worker_strategy

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # already initialized: the setting can no longer change
    if cluster is not None:
        strategy = multi_worker_strategy(cluster, collective_timeout, start_timeout, verbose)
    else:
        names = _device_names(devices, gpus)
        if len(names) > 1:
            strategy = tf.distribute.MirroredStrategy(names)
        else:
            strategy = tf.distribute.get_strategy()  # the default: one device
    policy = "float32"
    if mixed_precision:  # float16 on GPUs; CPUs compute bfloat16 natively
        policy = "mixed_float16" if gpus else "mixed_bfloat16"
    return Devices(strategy, strategy.num_replicas_in_sync, policy, cluster, len(gpus))


def _device_names(devices: str | None, gpus) -> list[str]:
    import tensorflow as tf

    if devices in (None, "", "auto"):
        return [f"/gpu:{i}" for i in range(len(gpus))]
    names = [f"/{name.strip().lstrip('/').lower()}" for name in devices.split(",")
             if name.strip()]
    known = {d.name.lower().replace("/device:", "/").split("/", 3)[-1]
             for d in tf.config.list_logical_devices()}
    known = {f"/{name}" for name in known}
    missing = [n for n in names if n not in known]
    if missing:
        raise FacekitError(f"Unknown device(s) {', '.join(missing)}; this machine has "
                           f"{', '.join(sorted(known))}.")
    return names
