"""``facekit.train``: one shared data and fit pipeline for every backbone, head and loss."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facekit.config import TrainConfig
from facekit.errors import FacekitError
from facekit.options import parse_options
from facekit.registry import Registry, get_registry


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
class _Plan:
    """The checked components and their parsed options."""

    backbone_options: dict
    head_options: dict
    loss_factory: object
    loss_options: dict


def check_config(config: TrainConfig, registry: Registry) -> _Plan:
    """Validate everything that can be checked without TensorFlow."""
    config.validate()
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise FacekitError("--tensorboard needs the tensorboard package (TensorFlow no longer "
                           "ships it): pip install 'facekit[tensorboard]'.")
    backbone = registry.get("backbone", config.backbone)
    head = registry.get("head", config.head)
    loss = registry.get("loss", config.loss)
    if head.outputs != loss.expects:
        fitting = [name for name in registry.names("head")
                   if registry.components["head"][name].outputs == loss.expects]
        raise FacekitError(
            f"The head '{head.name}' outputs {head.outputs} but the loss '{loss.name}' expects "
            f"{loss.expects}; use --head {' or --head '.join(fitting) or '<a ' + loss.expects + ' head>'}"
            f" with this loss.")
    return _Plan(parse_options(backbone, config.backbone_options),
                 parse_options(head, config.head_options), loss,
                 parse_options(loss, config.loss_options))


def train(config: TrainConfig | None = None, *, resume: str | Path | None = None,
          callbacks: list | None = None, **options) -> TrainResult:
    """Train a face model; ``options`` are TrainConfig fields and override ``config``.

    With ``resume`` (a run folder) the run continues from its last checkpoint
    with its saved configuration; ``options`` may still change, say, ``epochs``.
    ``callbacks`` are extra Keras callbacks, run after facekit's own.
    """
    state = None
    if resume is not None:
        config, state = _resume_config(Path(resume), options)
    else:
        config = dataclasses.replace(config or TrainConfig(), **options)
    registry = get_registry()
    plan = check_config(config, registry)
    config.augmentation()  # checks the augmentation options
    config = dataclasses.replace(  # the resolved, typed options are what the run records
        config, backbone_options=plan.backbone_options, head_options=plan.head_options,
        loss_options=plan.loss_options)

    from facekit.demo_data import demo_dataset_dir

    data_dir = Path(config.data) if config.data else demo_dataset_dir()
    data = plan_data(config, data_dir)
    eval_sets = load_eval_sets(config) + data.eval_sets
    monitor = best_model_monitor(config, data.val_images > 0, eval_sets)
    run_dir = Path(resume) if resume is not None else _make_run_dir(config.output)
    _write_json(run_dir / "classes.json", data.classes)
    _write_json(run_dir / "config.json", {**config.to_dict(), "data": str(data_dir)})
    if data.skipped:
        _write_skipped(run_dir / "skipped_files.csv", data.skipped)
    if config.verbose:
        print(data.summary + (f"\n(listed in {run_dir / 'skipped_files.csv'})"
                              if data.skipped else ""))
    return _fit(config, plan, data, run_dir, eval_sets, monitor, state, callbacks or [])


def _resume_config(run_dir: Path, options: dict) -> tuple[TrainConfig, dict]:
    from facekit.checkpoints import read_state

    if not (run_dir / "config.json").is_file():
        raise FacekitError(f"'{run_dir}' is not a facekit run folder (no config.json).")
    state = read_state(run_dir)
    if state is None:
        raise FacekitError(f"'{run_dir}' has no checkpoint yet (no epoch finished); start "
                           "the run again instead of resuming it.")
    saved = json.loads((run_dir / "config.json").read_text())
    config = TrainConfig.from_dict({**saved, **options, "output": str(run_dir)})
    if state["epoch"] >= config.epochs:
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
    val_permille: int = 0

    def datasets(self, image_size: int, batch_size: int, seed: int, skip_batches: int = 0,
                 deterministic: bool = False):
        """(training dataset, validation dataset or None)."""
        from facekit.data import make_dataset
        from facekit.shards import shard_dataset

        if self.shards is None:
            train = make_dataset(self.train_index, image_size=image_size,
                                 batch_size=batch_size, training=True, seed=seed,
                                 skip_batches=skip_batches, deterministic=deterministic)
            val = None if self.val_index is None else make_dataset(
                self.val_index, image_size=image_size, batch_size=batch_size, training=False)
            return train, val
        permille = self.val_permille
        train = shard_dataset(self.shards, image_size=image_size, batch_size=batch_size,
                              training=True, seed=seed,
                              keep=lambda i: _record_bucket(i) >= permille,
                              skip_batches=skip_batches, deterministic=deterministic)
        val = None if not permille else shard_dataset(
            self.shards, image_size=image_size, batch_size=batch_size, training=False,
            keep=lambda i: _record_bucket(i) < permille)
        return train, val


def _record_bucket(record_id):
    """A fixed pseudo-random bucket 0..999 per record: the validation split of shards."""
    return (record_id * 2654435761) % 1000


def plan_data(config: TrainConfig, data_dir: Path) -> DataPlan:
    """Index (or read the shard metadata), split, and summarize the training data."""
    from facekit.shards import is_packed, read_meta

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
                        val_permille=permille)
    from facekit.data import split_identities, split_index
    from facekit.evaluation import VerificationSet
    from facekit.index import load_index

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
    from facekit.evaluation import VerificationSet

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


def _fit(config, plan, data: DataPlan, run_dir, eval_sets, monitor, state,
         extra_callbacks) -> TrainResult:
    from facekit.device import dtype_policy, setup_devices

    devices = setup_devices(config.devices, config.mixed_precision)  # before other TF work
    with dtype_policy(devices.policy), devices.strategy.scope():
        return _fit_on_devices(config, plan, data, run_dir, eval_sets, monitor, state,
                               devices, extra_callbacks)


def _fit_on_devices(config, plan, data, run_dir, eval_sets, monitor, state,
                    devices, extra_callbacks) -> TrainResult:
    import keras

    from facekit.batchnorm import BatchNormRecalibration
    from facekit.callbacks import BestModelCheckpoint, HistoryFiles, VerificationCallback
    from facekit.checkpoints import EpochCheckpoint, StopOnSignal, checkpoint_dir, has_nan
    from facekit.model import BASIC_MODEL, build_model, load_model

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    batch_size = min(config.batch_size, data.train_images)
    steps = config.steps_per_epoch or max(1, data.train_images // batch_size)
    initial_epoch = 0
    if state is not None:  # resume: weights, optimizer state and step from the checkpoint
        model = load_model(checkpoint_dir(run_dir) / state["checkpoint"], compile=True)
        basic_model = model.get_layer(BASIC_MODEL)
        initial_epoch = state["epoch"]
    else:
        basic_model, model = build_model(
            len(data.classes), config.backbone, config.head, image_size=config.image_size,
            embedding_size=config.embedding_size, dropout=config.dropout,
            pooling=config.pooling, backbone_options=plan.backbone_options,
            head_options=plan.head_options, augmentation=config.augmentation(),
            seed=config.seed)
        model.compile(optimizer=_optimizer(config, steps),
                      loss=plan.loss_factory.build(**plan.loss_options),
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                      jit_compile="auto" if config.jit_compile is None else config.jit_compile)
    if config.verbose and devices.replicas > 1:
        print(f"Training on {devices.replicas} devices (MirroredStrategy), global batch "
              f"{min(config.batch_size, data.train_images)}")
    train_data, val_data = data.datasets(config.image_size, batch_size, config.seed,
                                         skip_batches=initial_epoch * steps,
                                         deterministic=config.deterministic)
    val_steps = -(-data.val_images // batch_size) if val_data is not None else None
    if devices.replicas > 1:
        # With validation_steps, Keras 3.15 raised StopIteration from the distributed
        # validation data under MirroredStrategy (seen in tests): run it to its end.
        val_steps = None
    # Order matters: a signal stops the epoch first; statistics are recalibrated
    # before verification; every figure is in the logs before the checkpoints
    # and the CSV read them.
    stopper = StopOnSignal()
    callbacks = [stopper, keras.callbacks.TerminateOnNaN()]
    if config.bn_recalibration_batches:
        callbacks.append(BatchNormRecalibration(  # never more batches than an epoch has
            basic_model, train_data, min(config.bn_recalibration_batches, steps), steps))
    if eval_sets:
        callbacks.append(VerificationCallback(basic_model, eval_sets))
    best = None
    if monitor:
        best = BestModelCheckpoint(basic_model, run_dir / "basic_model.keras", monitor)
        if state is not None and "best" in state:
            best.best, best.best_epoch = state["best"]["value"], state["best"]["epoch"]
        callbacks.append(best)
    callbacks += [EpochCheckpoint(run_dir, config.keep_checkpoints, stopper, best),
                  keras.callbacks.CSVLogger(str(run_dir / "history.csv"),
                                            append=state is not None),
                  HistoryFiles(run_dir)]
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard")))
    callbacks += extra_callbacks
    started = time.perf_counter()
    history = model.fit(train_data, epochs=config.epochs, initial_epoch=initial_epoch,
                        steps_per_epoch=steps, validation_data=val_data,
                        validation_steps=val_steps, shuffle=False, verbose=config.verbose,
                        callbacks=callbacks)
    elapsed = time.perf_counter() - started
    result = TrainResult(run_dir, {k: [float(v) for v in vals]
                                   for k, vals in history.history.items()},
                         interrupted=stopper.signal_name, seconds=elapsed,
                         images=steps * batch_size * len(history.epoch))
    last_logs = {k: v[-1] for k, v in result.history.items() if v}
    if stopper.signal_name or has_nan(last_logs):
        done = (json.loads((checkpoint_dir(run_dir) / "state.json").read_text())["epoch"]
                if (checkpoint_dir(run_dir) / "state.json").exists() else 0)
        reason = stopper.signal_name or "NaN loss"
        print(f"\nStopped by {reason}; the last good checkpoint is epoch {done}. Continue with: "
              f"facekit train --resume {run_dir}")
        return result
    basic_model.save(run_dir / "basic_model_last.keras")
    if best is None or best.best_epoch is None:
        basic_model.save(run_dir / "basic_model.keras")
    model.save(run_dir / "model.keras")
    if config.verbose:
        print(f"Trained {len(history.epoch)} epoch(s) in {elapsed:.1f}s "
              f"({result.images / elapsed:.1f} images/s, validation and checkpoints included); "
              f"run folder: {run_dir}")
        if best is not None and best.best_epoch is not None:
            print(f"Best epoch {best.best_epoch + 1}: {monitor} {best.best:.4f} "
                  f"(basic_model.keras)")
    return result


def _optimizer(config: TrainConfig, steps_per_epoch: int):
    from facekit.optimizers import DEFAULT_LR, learning_rate, make_optimizer

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
