"""``facekit.train``: one shared data and fit pipeline for every backbone, head and loss."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facekit.config import TrainConfig, read_config_file, write_config_file
from facekit.errors import FacekitError
from facekit.options import parse_options
from facekit.registry import Registry, get_registry

CONFIG_FILE = "config.toml"  # the resolved configuration: facekit train --config RUN/config.toml


@dataclass
class TrainResult:
    """What a run produced: its folder and its per-epoch history."""

    run_dir: Path
    history: dict[str, list[float]]
    interrupted: str | None = None  # the signal that stopped the run early
    seconds: float = 0.0  # wall time of the epochs (validation and checkpoints included)
    images: int = 0  # training images seen

    @property
    def basic_model_path(self) -> Path:
        return self.run_dir / "basic_model.keras"

    @property
    def model_path(self) -> Path:
        return self.run_dir / "model.keras"


@dataclass
class Stage:
    """One stage of a run: its whole configuration (plugin options parsed) and loss."""

    config: TrainConfig
    loss_factory: object
    first_epoch: int  # epochs of the run before this stage

    @property
    def end_epoch(self) -> int:
        return self.first_epoch + self.config.epochs


def check_config(config: TrainConfig, registry: Registry) -> tuple[TrainConfig, list[Stage]]:
    """Validate everything that can be checked without TensorFlow.

    Returns the configuration with its plugin options parsed and typed (what
    the run records) and its stages.
    """
    config.validate()
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise FacekitError("--tensorboard needs the tensorboard package (TensorFlow no longer "
                           "ships it): pip install 'facekit[tensorboard]'.")
    backbone_options = parse_options(registry.get("backbone", config.backbone),
                                     config.backbone_options)
    stages, first_epoch = [], 0
    for stage in config.stage_configs():
        head, loss = _check_head_and_loss(stage, registry)
        stage = dataclasses.replace(
            stage, backbone_options=backbone_options,
            head_options=parse_options(head, stage.head_options),
            loss_options=parse_options(loss, stage.loss_options))
        stages.append(Stage(stage, loss, first_epoch))
        first_epoch += stage.epochs
    top_head, top_loss = _check_head_and_loss(config, registry)
    resolved = dataclasses.replace(
        config, backbone_options=backbone_options,
        head_options=parse_options(top_head, config.head_options),
        loss_options=parse_options(top_loss, config.loss_options))
    return resolved, stages


def _check_head_and_loss(config: TrainConfig, registry: Registry):
    head = registry.get("head", config.head)
    loss = registry.get("loss", config.loss)
    if head.outputs != loss.expects:
        fitting = [name for name in registry.names("head")
                   if registry.components["head"][name].outputs == loss.expects]
        raise FacekitError(
            f"The head '{head.name}' outputs {head.outputs} but the loss '{loss.name}' expects "
            f"{loss.expects}; use --head {' or --head '.join(fitting) or '<a ' + loss.expects + ' head>'}"
            f" with this loss.")
    return head, loss


def train(config: TrainConfig | None = None, *, resume: str | Path | None = None,
          callbacks: list | None = None, **options) -> TrainResult:
    """Train a face model; ``options`` are TrainConfig fields and override ``config``
    (in every stage too).

    With ``resume`` (a run folder) the run continues from its last checkpoint
    with its saved configuration; ``options`` may still change, say, ``epochs``.
    ``callbacks`` are extra Keras callbacks, run after facekit's own in every stage.
    """
    state = None
    if resume is not None:
        config, state = _resume_config(Path(resume), options)
    else:
        config = (config or TrainConfig()).with_overrides(**options)
    config, stages = check_config(config, get_registry())
    for stage in stages:
        stage.config.augmentation()  # checks the augmentation options

    from facekit.data.demo import demo_dataset_dir
    from facekit.fit.devices import setup_devices
    from facekit.data.index import is_pattern, require_folder

    data_dir = Path(config.data) if config.data else demo_dataset_dir()
    if not is_pattern(data_dir):
        require_folder(data_dir)  # a user mistake: say so before TensorFlow starts
    # Before any other TensorFlow work: GPU memory growth and the cluster's
    # collectives can only be configured before TensorFlow starts.
    devices = setup_devices(config.devices, config.mixed_precision, config.cluster,
                            config.collective_timeout)
    data = plan_data(config, data_dir)
    check_sharding(data, config, devices)
    eval_sets = load_eval_sets(config) + data.eval_sets
    monitor = best_model_monitor(config, data.val_images > 0, eval_sets)
    run_dir = Path(resume) if resume is not None else _make_run_dir(config.output)
    if devices.chief:
        _write_json(run_dir / "classes.json", data.classes)
        write_config_file(dataclasses.replace(config, data=str(data_dir.resolve())),
                          run_dir / CONFIG_FILE)
        if data.skipped:
            _write_skipped(run_dir / "skipped_files.csv", data.skipped)
    if config.verbose:
        print(data.summary + (f"\n(listed in {run_dir / 'skipped_files.csv'})"
                              if data.skipped else ""))
        if len(stages) > 1:
            print(describe_stages(stages))
    return _fit(config, stages, data, run_dir, eval_sets, monitor, state, devices,
                callbacks or [])


def check_sharding(data: DataPlan, config: TrainConfig, devices) -> None:
    """Refuse, in one sentence, data that cannot be split evenly over the workers."""
    if devices.cluster is None:
        return
    workers, replicas = devices.cluster.workers, devices.replicas
    if config.batch_size % replicas:
        raise FacekitError(f"--batch-size {config.batch_size} cannot be split evenly over "
                           f"{replicas} replicas on {workers} workers; use a multiple of "
                           f"{replicas}.")
    if data.shards is not None:
        if data.shard_files < workers:
            raise FacekitError(f"The packed data has {data.shard_files} shard(s) for {workers} "
                               "workers, and each worker reads whole shards; pack it again "
                               "with a smaller --images-per-shard.")
    elif data.train_images < config.batch_size * workers:
        raise FacekitError(f"{data.train_images} training images are too few to give each of "
                           f"{workers} workers a full batch; lower --batch-size.")


def describe_stages(stages: list[Stage]) -> str:
    lines = [f"{len(stages)} stages:"]
    for number, stage in enumerate(stages, 1):
        c = stage.config
        frozen = "" if c.frozen == "none" else f", {c.frozen} frozen"
        lines.append(f"  {number}. epochs {stage.first_epoch + 1}-{stage.end_epoch}: "
                     f"{c.head} head, {c.loss} loss, {c.optimizer}{frozen}")
    return "\n".join(lines)


def _resume_config(run_dir: Path, options: dict) -> tuple[TrainConfig, dict]:
    from facekit.fit.checkpoints import read_state

    if not (run_dir / CONFIG_FILE).is_file():
        raise FacekitError(f"'{run_dir}' is not a facekit run folder (no {CONFIG_FILE}).")
    state = read_state(run_dir)
    if state is None:
        raise FacekitError(f"'{run_dir}' has no checkpoint yet (no epoch finished); start "
                           "the run again instead of resuming it.")
    saved = TrainConfig.from_dict(read_config_file(run_dir / CONFIG_FILE))
    if saved.stages and "epochs" in options:
        raise FacekitError("--epochs cannot change a run with stages on resume; each stage "
                           f"keeps its epochs (see {run_dir / CONFIG_FILE}).")
    config = saved.with_overrides(**options, output=str(run_dir))
    if state["epoch"] >= config.total_epochs:
        raise FacekitError(f"'{run_dir}' has already trained {state['epoch']} epoch(s); pass "
                           f"--epochs with more than {state['epoch']} to continue.")
    return config, state


@dataclass
class DataPlan:
    """Where training and validation images come from, decided before TensorFlow loads."""

    classes: list[str]
    train_images: int
    val_images: int
    summary: str
    skipped: list = dataclasses.field(default_factory=list)
    eval_sets: list = dataclasses.field(default_factory=list)
    train_index: object = None  # folder data
    val_index: object = None
    shards: Path | None = None  # packed data
    shard_files: int = 0
    val_permille: int = 0

    def datasets(self, image_size: int, batch_size: int, seed: int, skip_batches: int = 0,
                 deterministic: bool = False, workers: int = 1, worker: int = 0):
        """(training dataset, validation dataset or None); with several ``workers``,
        the share of ``worker``: its files, or its shards."""
        from facekit.data.pipeline import make_dataset
        from facekit.data.shards import shard_dataset

        share = dict(num_workers=workers, worker_index=worker)
        if self.shards is None:
            train = make_dataset(self.train_index, image_size=image_size,
                                 batch_size=batch_size, training=True, seed=seed,
                                 skip_batches=skip_batches, deterministic=deterministic,
                                 **share)
            val = None if self.val_index is None else make_dataset(
                self.val_index, image_size=image_size, batch_size=batch_size, training=False,
                **share)
            return train, val
        permille = self.val_permille
        train = shard_dataset(self.shards, image_size=image_size, batch_size=batch_size,
                              training=True, seed=seed,
                              keep=lambda i: _record_bucket(i) >= permille,
                              skip_batches=skip_batches, deterministic=deterministic, **share)
        val = None if not permille else shard_dataset(
            self.shards, image_size=image_size, batch_size=batch_size, training=False,
            keep=lambda i: _record_bucket(i) < permille, **share)
        return train, val


def _record_bucket(record_id):
    """A fixed pseudo-random bucket 0..999 per record: the validation split of shards."""
    return (record_id * 2654435761) % 1000


def plan_data(config: TrainConfig, data_dir: Path) -> DataPlan:
    """Index (or read the shard metadata), split, and summarize the training data."""
    from facekit.data.shards import is_packed, read_meta

    if is_packed(data_dir):
        if config.split_by == "identities":
            raise FacekitError("--split-by identities is not available for packed shards; "
                               "use --split-by images, or evaluate held-out people with "
                               "--eval-pairs/--eval-bin.")
        meta = read_meta(data_dir)
        permille = int(round(config.val_split * 1000))
        val = int(np.sum(_record_bucket(np.arange(meta["images"], dtype=np.int64)) < permille))
        return DataPlan(meta["classes"], meta["images"] - val, val,
                        f"{meta['images']} packed images of {len(meta['classes'])} identities "
                        f"in {len(meta['shards'])} shard(s)", shards=data_dir,
                        shard_files=len(meta["shards"]), val_permille=permille)
    from facekit.data.pipeline import split_identities, split_index
    from facekit.eval.sets import VerificationSet
    from facekit.data.index import load_index

    index = load_index(data_dir)
    summary = index.summary()
    if config.split_by == "identities":
        train, held_out = split_identities(index, config.val_split, config.seed)
        eval_sets = [] if held_out is None else [VerificationSet.from_index(
            held_out, 10 * max(1, min(50, len(held_out) // 10)), 5, config.seed, "val")]
        return DataPlan(train.classes, len(train), 0, summary, index.skipped, eval_sets,
                        train_index=train)
    train, val = split_index(index, config.val_split, config.seed)
    singles = int((index.counts() == 1).sum())
    if val is not None and singles:
        summary += (f"\n{singles} identities have a single image: they are trained on but "
                    "have none held out for validation")
    return DataPlan(index.classes, len(train), 0 if val is None else len(val), summary,
                    index.skipped, train_index=train, val_index=val)


def _write_skipped(path: Path, skipped) -> None:
    import csv

    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("path", "reason"), *skipped])


def load_eval_sets(config: TrainConfig) -> list:
    """The verification sets to run after each epoch (read before training starts)."""
    from facekit.eval.sets import VerificationSet

    sets = [VerificationSet.from_pairs(data, pairs)
            for pairs, data in zip(config.eval_pairs, config.eval_data)]
    sets += [VerificationSet.from_bin(path) for path in config.eval_bins]
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise FacekitError(f"Two verification sets share a name ({', '.join(names)}); "
                           "rename one of the files.")
    return sets


def best_model_monitor(config: TrainConfig, has_validation: bool, eval_sets) -> str | None:
    """The logged figure that picks basic_model.keras, checked against what will be logged."""
    if config.best_by is None:
        if has_validation:
            return "val_accuracy"
        return "eval/val" if any(s.name == "val" for s in eval_sets) else None
    logged = ["loss", "accuracy"] + (["val_loss", "val_accuracy"] if has_validation else [])
    logged += [f"eval/{s.name}" for s in eval_sets]
    if config.best_by not in logged:
        raise FacekitError(f"--best-by '{config.best_by}' is not logged by this run; "
                           f"choose one of: {', '.join(logged)}.")
    return config.best_by


def _fit(config, stages, data: DataPlan, run_dir, eval_sets, monitor, state, devices,
         extra_callbacks) -> TrainResult:
    from facekit.fit.devices import dtype_policy
    from facekit.fit.distributed import worker_failure

    try:
        with dtype_policy(devices.policy), devices.strategy.scope():
            return _fit_on_devices(config, stages, data, run_dir, eval_sets, monitor, state,
                                   devices, extra_callbacks)
    except Exception as exc:
        if devices.cluster is None or not worker_failure(exc):
            raise
        raise FacekitError(
            f"Lost contact with another worker of the cluster ({type(exc).__name__}, see "
            f"above); restart every worker with facekit train --resume {run_dir} to continue "
            "from the last checkpoint.") from None


def _fit_on_devices(config, stages, data, run_dir, eval_sets, monitor, state,
                    devices, extra_callbacks) -> TrainResult:
    import keras

    from facekit.fit.callbacks import BestModelCheckpoint
    from facekit.fit.checkpoints import StopOnSignal, checkpoint_dir, has_nan, read_state
    from facekit.model.build import BASIC_MODEL, load_model

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    batch_size = min(config.batch_size, data.train_images)
    steps = config.steps_per_epoch or max(1, data.train_images // batch_size)
    if config.verbose and devices.replicas > 1:
        where = (f"{devices.cluster.workers} workers (MultiWorkerMirroredStrategy; this is "
                 f"worker {devices.cluster.index})" if devices.cluster
                 else "devices (MirroredStrategy)")
        print(f"Training on {devices.replicas} replicas over {where}, global batch "
              f"{batch_size}")
    done = state["epoch"] if state is not None else 0
    # Every worker saves the same models (saving reads values the workers share
    # through collectives); the chief into the run folder, the others into their own.
    own_dir = run_dir if devices.chief else run_dir / "workers" / str(devices.cluster.index)
    own_dir.mkdir(parents=True, exist_ok=True)
    # Shared by every stage: a signal stops the whole run, and the best model is the run's.
    stopper = StopOnSignal()
    best = None
    if monitor:
        best = BestModelCheckpoint(own_dir / "basic_model.keras", monitor)
        if state is not None and "best" in state:
            best.best, best.best_epoch = state["best"]["value"], state["best"]["epoch"]
    model, history, started = None, {}, time.perf_counter()
    for number, stage in enumerate(stages, 1):
        if done >= stage.end_epoch:
            continue
        if model is None and state is not None:  # resume: weights, optimizer state and step
            model = load_model(checkpoint_dir(run_dir) / state["checkpoint"],
                               compile=done > stage.first_epoch)
        if done <= stage.first_epoch:  # the stage starts now: its head, freezing, optimizer
            previous = stages[number - 2].config if number > 1 else None
            model = _stage_model(config, stage.config, model, previous, len(data.classes))
            model.compile(optimizer=_optimizer(stage.config, steps),
                          loss=stage.loss_factory.build(**stage.config.loss_options),
                          metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                          jit_compile="auto" if config.jit_compile is None
                          else config.jit_compile)
        first = max(done, stage.first_epoch)
        train_data, val_data, val_steps, own_data = _stage_data(
            data, config, devices, batch_size, skip_batches=first * steps)
        callbacks = _stage_callbacks(stage.config, number, len(stages), model, own_data,
                                     steps, own_dir, eval_sets, stopper, best, devices,
                                     append=state is not None or first > 0)
        if devices.cluster is not None:
            from facekit.fit.distributed import enable_multi_worker_fit

            enable_multi_worker_fit(model)
        fitted = model.fit(train_data, epochs=stage.end_epoch, initial_epoch=first,
                           steps_per_epoch=steps, validation_data=val_data,
                           validation_steps=val_steps, shuffle=False, verbose=config.verbose,
                           callbacks=callbacks + extra_callbacks)
        for key, values in fitted.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
        done = first + len(fitted.epoch)
        if stopper.signal_name or done < stage.end_epoch:  # or a NaN loss, or a callback
            break
    elapsed = time.perf_counter() - started
    epochs_run = done - (state["epoch"] if state is not None else 0)
    result = TrainResult(run_dir, history, interrupted=stopper.signal_name, seconds=elapsed,
                         images=steps * batch_size * epochs_run)
    if stopper.signal_name or done < stages[-1].end_epoch:
        saved = (read_state(run_dir) or {"epoch": 0})["epoch"]
        last_logs = {key: values[-1] for key, values in history.items() if values}
        reason = stopper.signal_name or ("NaN loss" if has_nan(last_logs) else "a callback")
        print(f"\nStopped by {reason}; the last good checkpoint is epoch {saved}. Continue "
              f"with: facekit train --resume {run_dir}")
        return result
    basic_model = model.get_layer(BASIC_MODEL)
    basic_model.save(own_dir / "basic_model_last.keras")
    if best is None or best.best_epoch is None:
        basic_model.save(own_dir / "basic_model.keras")
    model.save(own_dir / "model.keras")
    if config.verbose:
        print(f"Trained {epochs_run} epoch(s) in {elapsed:.1f}s "
              f"({result.images / elapsed:.1f} images/s, validation and checkpoints included); "
              f"run folder: {run_dir}")
        if best is not None and best.best_epoch is not None:
            print(f"Best epoch {best.best_epoch + 1}: {monitor} {best.best:.4f} "
                  f"(basic_model.keras)")
    return result


def _stage_model(config: TrainConfig, stage: TrainConfig, model, previous: TrainConfig | None,
                 num_classes: int):
    """The training model of a stage that starts now.

    The basic model carries over from the previous stage (or is built, and
    loaded from ``init_from``); so does the head when the stage keeps it.
    """
    from facekit.model.build import (BASIC_MODEL, build_basic_model, build_training_model, freeze,
                               init_basic_model)

    if model is None:
        basic_model = build_basic_model(
            config.backbone, image_size=config.image_size,
            embedding_size=config.embedding_size, dropout=config.dropout,
            pooling=config.pooling, backbone_options=config.backbone_options)
        if config.init_from:
            init_basic_model(basic_model, config.init_from)
    else:
        basic_model = model.get_layer(BASIC_MODEL)
    same_head = (previous is not None and previous.head == stage.head
                 and previous.head_options == stage.head_options)
    if model is None or not same_head:
        model = build_training_model(basic_model, num_classes, stage.head,
                                     head_options=stage.head_options,
                                     augmentation=config.augmentation(), seed=config.seed)
    freeze(basic_model, stage.frozen)
    return model


def _stage_data(data: DataPlan, config: TrainConfig, devices, batch_size: int,
                skip_batches: int):
    """(training input, validation input, validation steps, this process's own
    training data) for ``model.fit``.

    On a multi-worker cluster each worker reads its own share of the data,
    batched per replica, through ``distribute_datasets_from_function``; its
    validation share repeats, so every worker runs the same number of steps.
    """
    options = dict(seed=config.seed, skip_batches=skip_batches,
                   deterministic=config.deterministic)
    cluster = devices.cluster
    if cluster is None:
        train, val = data.datasets(config.image_size, batch_size, **options)
        # With validation_steps, Keras 3.15 raised StopIteration from the distributed
        # validation data under MirroredStrategy (seen in tests): run it to its end.
        val_steps = (-(-data.val_images // batch_size)
                     if val is not None and devices.replicas == 1 else None)
        return train, val, val_steps, train
    per_replica = batch_size // devices.replicas

    def share(training):
        def dataset(context):
            train, val = data.datasets(config.image_size, per_replica, **options,
                                       workers=cluster.workers,
                                       worker=context.input_pipeline_id)
            return train if training else val.repeat()
        return dataset

    strategy = devices.strategy
    train = strategy.distribute_datasets_from_function(share(True))
    val = strategy.distribute_datasets_from_function(share(False)) if data.val_images else None
    own, _ = data.datasets(config.image_size, per_replica, **options,
                           workers=cluster.workers, worker=cluster.index)
    val_steps = max(1, data.val_images // batch_size) if val is not None else None
    return train, val, val_steps, own


def _stage_callbacks(stage: TrainConfig, number: int, stages: int, model, train_data,
                     steps: int, run_dir: Path, eval_sets, stopper, best, devices,
                     append: bool):
    """facekit's callbacks for one stage, in order: a signal stops the epoch first;
    statistics are recalibrated (and agreed between workers) before verification;
    every figure is in the logs before the checkpoints and the history files read
    them.  Only the chief writes files."""
    import keras

    from facekit.fit.batchnorm import BatchNormRecalibration
    from facekit.fit.callbacks import (AverageStatistics, HistoryFiles, StageLog,
                                   VerificationCallback)
    from facekit.fit.checkpoints import EpochCheckpoint
    from facekit.model.build import BASIC_MODEL

    callbacks = [stopper, keras.callbacks.TerminateOnNaN()]
    if stages > 1:
        callbacks.append(StageLog(number))
    if stage.bn_recalibration_batches and stage.frozen == "none":  # frozen BN statistics stay
        callbacks.append(BatchNormRecalibration(  # never more batches than an epoch has
            model.get_layer(BASIC_MODEL), train_data,
            min(stage.bn_recalibration_batches, steps), steps))
    if devices.cluster is not None:
        callbacks.append(AverageStatistics(devices.strategy))
    if eval_sets:
        callbacks.append(VerificationCallback(eval_sets))
    if best is not None:
        callbacks.append(best)
    # A run resumes from the chief's checkpoints; the other workers keep their last.
    callbacks.append(EpochCheckpoint(run_dir, stage.keep_checkpoints if devices.chief else 1,
                                     stopper, best))
    if devices.chief:
        callbacks.append(HistoryFiles(run_dir, append=append))
        if stage.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard")))
    return callbacks


def _optimizer(config: TrainConfig, steps_per_epoch: int):
    from facekit.fit.optimizers import DEFAULT_LR, learning_rate, make_optimizer

    rate = learning_rate(config.schedule, config.lr or DEFAULT_LR[config.optimizer],
                         steps_per_epoch=steps_per_epoch, epochs=config.epochs,
                         warmup_epochs=config.warmup_epochs, decay_rate=config.decay_rate,
                         step_epochs=tuple(config.step_epochs),
                         per_epoch=config.schedule_per == "epoch")
    return make_optimizer(config.optimizer, rate, config.weight_decay)


def _make_run_dir(output: str | None) -> Path:
    if output:
        run_dir = Path(output)
    else:
        run_dir = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    if (run_dir / "model.keras").exists():
        raise FacekitError(f"The run folder '{run_dir}' already holds a trained model; pass "
                           "another --output folder.")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
