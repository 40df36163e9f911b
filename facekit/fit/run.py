"""The fit loop: one shared Keras ``Model.fit`` path for every plan, stage and device.

``fit(plan)`` sets up the devices, loads the data source and runs the plan's
stages; a :class:`Run` holds what the stages share (devices, data, run
folder, the best model, the stop signal).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from facekit.config import DEFAULT_LR, write_config_file
from facekit.console import interactive
from facekit.errors import OptionError
from facekit.eval.protocols import Pairs
from facekit.eval.sets import VerificationSet
from facekit.fit.batchnorm import BatchNormRecalibration
from facekit.data.pipeline import DroppedBatches
from facekit.data.prepare import preprocessing
from facekit.files import unique_temporary, write_atomic
from facekit.fit.callbacks import (AverageStatistics, AveragedWeights, BestModelCheckpoint,
                                   DroppedLog, HistoryFiles, RunProgbar, StageLog,
                                   VerificationCallback)
from facekit.fit.checkpoints import EpochCheckpoint, StopOnSignal, architecture, has_nan
from facekit.fit.distill import DISTILLATION_LAYER, Distillation, load_teacher
from facekit.fit.devices import setup_devices
from facekit.fit.distributed import multi_worker_fit, worker_failure
from facekit.fit.metrics import ClassAccuracy
from facekit.fit.optimizers import learning_rate, make_optimizer
from facekit.model import (BASIC_MODEL, build_basic_model, build_training_model, freeze,
                           head_layer, init_basic_model, load_model)
from facekit.model.build import dtype_policy
from facekit.model.losses import STATE_LAYER, bind_loss_state, initial_state
from facekit.model.pretrained import resolve_model
from facekit.errors import FacekitError
from facekit.fit import TrainResult
from facekit.plan import RunPlan, StagePlan


def fit(plan: RunPlan, callbacks: list | None = None) -> TrainResult:
    """Train what ``plan`` describes; ``callbacks`` run after facekit's own."""

    config, source = plan.config, plan.source
    # Before any other TensorFlow work: GPU memory growth and the cluster's
    # collectives can only be configured before TensorFlow starts.
    devices = setup_devices(config.devices, config.mixed_precision, plan.cluster,
                            config.collective_timeout, config.cluster_start_timeout,
                            bool(config.verbose))
    source.load()
    check_sharing(source, config.batch_size, devices)
    eval_sets = plan.eval_sets + held_out_sets(source, config.seed)
    monitor = best_model_monitor(config, source.val_images > 0, eval_sets)
    run_dir, run = plan.run_dir, plan.run
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    if devices.chief:
        run.classes.write_text(json.dumps(source.classes, indent=2) + "\n")
        if source.skipped:
            with open(run.skipped_files, "w", newline="") as f:
                csv.writer(f).writerows([("path", "reason"), *source.skipped])
    if config.verbose:
        if plan.inherited:
            print(f"From --init-from {config.init_from}: " + ", ".join(
                f"{name} {value}" for name, value in plan.inherited.items()))
        print(f"Data: {describe_data(config, source)}")
        print(source.summary + (f"\n(listed in {run.skipped_files})" if source.skipped
                                else ""))
        print(f"Training on {devices.describe()}, batch {min(config.batch_size, source.train_images)}")
        if len(plan.stages) > 1:
            print(plan.describe_stages())
    run = Run(plan, devices, eval_sets, monitor, callbacks or [])
    try:
        with dtype_policy(devices.policy), devices.strategy.scope():
            return run.fit()
    except FacekitError:
        if created and devices.chief and plan.run.read_state() is None:
            shutil.rmtree(run_dir, ignore_errors=True)  # refused before any epoch: ours
        raise
    except Exception as exc:
        if devices.cluster is None or not worker_failure(exc):
            raise
        raise FacekitError(
            f"Lost contact with another worker of the cluster ({type(exc).__name__}, see "
            f"above); restart every worker with facekit train --resume {run_dir} to continue "
            "from the last checkpoint.") from None


def describe_data(config, source) -> str:
    """Where the run's images come from, said at its start."""
    if config.data is None:
        return (f"the built-in demo dataset (synthetic faces, cached in {source.path}); "
                "train on your own with --data DIR")
    return str(source.path)


def folder_size(path) -> int:
    """The bytes of every file under ``path``, a hard-linked file counted once."""
    import os

    seen, total = set(), 0
    for root, _, files in os.walk(path):
        for name in files:
            stat = os.stat(os.path.join(root, name))
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_size
    return total


def held_out_sets(source, seed: int) -> list:
    """The verification set of the people ``--split-by identities`` held out (``eval/val``):
    up to 500 pairs drawn from them, 5 folds."""

    held_out = source.held_out
    if held_out is None:
        return []
    return [Pairs(VerificationSet.from_index(
        held_out, 10 * max(1, min(50, len(held_out) // 10)), 5, seed, "val"))]


def check_sharing(source, batch_size: int, devices) -> None:
    """Refuse, in one sentence, a batch the devices or data the cluster's workers cannot
    share."""
    replicas = devices.replicas
    if batch_size % replicas:
        lower = batch_size // replicas * replicas
        nearest = " or ".join(str(n) for n in (lower, lower + replicas) if n > 0)
        where = (f"on {devices.cluster.workers} workers" if devices.cluster is not None
                 else "on this machine")
        raise OptionError(
            "{batch_size} {size} cannot be split evenly over the {replicas} replicas {where}; "
            "use a multiple of {replicas} ({nearest}).", size=batch_size, replicas=replicas,
            where=where, nearest=nearest)
    if devices.cluster is not None:
        source.check_workers(devices.cluster.workers, batch_size)


def best_model_monitor(config, has_validation: bool, eval_sets) -> str | None:
    """The logged figure that picks basic_model.keras, checked against what will be logged."""
    if config.best_by is None:
        if has_validation:
            return "val_accuracy"
        return "eval/val" if any(s.name == "val" for s in eval_sets) else None
    logged = ["loss", "accuracy"] + (["val_loss", "val_accuracy"] if has_validation else [])
    logged += [f"eval/{s.name}" for s in eval_sets]
    if config.best_by not in logged:
        raise OptionError("{best_by} '{value}' is not logged by this run; choose one of: "
                          "{logged}.", value=config.best_by, logged=", ".join(logged))
    return config.best_by


class Run:
    """A planned run on its devices: the stages' shared state and how each is fitted."""

    def __init__(self, plan: RunPlan, devices, eval_sets: list, monitor: str | None,
                 extra_callbacks: list):

        self.plan, self.config, self.source = plan, plan.config, plan.source
        self.devices, self.eval_sets, self.monitor = devices, eval_sets, monitor
        self.extra_callbacks = extra_callbacks
        self.run_dir = plan.run_dir
        # Progress bars in a terminal; one line per epoch in a log file (Slurm, nohup, CI).
        verbose = self.config.verbose
        self.keras_verbose = 2 if verbose == 1 and not interactive() else verbose
        self.batch_size = min(self.config.batch_size, self.source.train_images)
        self.steps = self.config.steps_per_epoch or max(
            1, self.source.train_images // self.batch_size)
        # Every worker saves the same models (saving reads values the workers share
        # through collectives); the chief into the run folder, the others into their own.
        self.own = plan.run if devices.chief else plan.run.worker(devices.cluster.index)
        self.own_dir = self.own.path
        self.own_dir.mkdir(parents=True, exist_ok=True)
        # Shared by every stage: a signal stops the whole run, and the best model is the run's.
        self.stopper = StopOnSignal()
        self.dropped = DroppedBatches()
        self.best = None
        if monitor:
            self.best = BestModelCheckpoint(self.own.basic_model, monitor)
            if plan.resume is not None and plan.resume.best is not None:
                self.best.best = plan.resume.best.value
                self.best.best_epoch = plan.resume.best.epoch

    @property
    def resumed_epochs(self) -> int:
        return self.plan.resume.epoch if self.plan.resume is not None else 0

    def record_config(self) -> None:
        """Write config.toml with the rules that need the devices and the data, settled
        now: XLA on this hardware, and the figure that picks the best model.  A resume
        writes it only once its checkpoint has loaded, so a failed one changes nothing."""
        if not self.devices.chief:
            return
        jit = self.devices.jit_compile(self.config.jit_compile)
        write_config_file(dataclasses.replace(
            self.config, data=str(self.source.path.resolve()), best_by=self.monitor,
            jit_compile=jit if isinstance(jit, bool) else None), self.plan.run.config)
        alignment = preprocessing(self.source.path)
        if alignment is not None:  # so eval, compare and export can say what the model expects
            write_atomic(self.plan.run.preprocessing, json.dumps(
                {"data": str(self.source.path.resolve()), "alignment": alignment}, indent=2))

    def stage_at(self, epoch: int) -> StagePlan:
        """The stage that trains epoch ``epoch + 1`` (the last stage once all are done)."""
        return next((stage for stage in self.plan.stages if epoch < stage.end_epoch),
                    self.plan.stages[-1])

    def load_resume_point(self):
        """(model, epochs done) of the newest checkpoint that loads: the one state.json
        names, else an earlier one still in the folder (said in one line)."""
        run, state = self.plan.run, self.plan.resume
        candidates = [(state.epoch, run.checkpoint(state.checkpoint))] + [
            (epoch, path) for epoch, path in run.saved_checkpoints() if epoch < state.epoch]
        failures = []
        for epoch, path in candidates:
            stage = self.stage_at(epoch)
            compile = stage.first_epoch < epoch < stage.end_epoch
            try:
                model = load_model(path, compile=compile)
            except FacekitError as exc:
                failures.append(str(exc))
                continue
            if compile:  # the loss comes back with the model
                bind_loss_state(model, model.loss)
            if failures:
                print(f"{failures[0]} Resuming from the intact {path.name} instead "
                      f"(epoch {epoch}).")
                self.plan.resume = dataclasses.replace(state, epoch=epoch, checkpoint=path.name,
                                                       stage=stage.number)
            return model, epoch
        raise FacekitError(failures[0] + (" No earlier checkpoint loads either."
                                          if len(failures) > 1 else ""))

    def fit(self) -> TrainResult:
        config = self.config
        keras.utils.set_random_seed(config.seed)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        done, model, history = 0, None, {}
        if self.plan.resume is not None:  # weights, optimizer, step
            model, done = self.load_resume_point()
            if config.verbose:
                print(f"Resuming {self.run_dir} after epoch {done} of "
                      f"{self.plan.total_epochs} ({self.plan.resume.checkpoint})")
        self.record_config()
        started = time.perf_counter()
        for stage in self.plan.stages:
            if done >= stage.end_epoch:
                continue
            if done <= stage.first_epoch:  # the stage starts now: its head, freezing, optimizer
                loss = None if config.no_labels else stage.loss.build()
                first_model = model is None
                model = self.stage_model(stage, model, loss)
                self.compile(model, stage, loss)
                if config.verbose and first_model:
                    self.say_model(model)
            if config.verbose and len(self.plan.stages) > 1:
                c = stage.config
                frozen = "" if c.frozen == "none" else f", {c.frozen} frozen"
                print(f"Stage {stage.number} of {len(self.plan.stages)} (epochs "
                      f"{stage.first_epoch + 1}-{stage.end_epoch}): {c.head} head, {c.loss} "
                      f"loss{frozen}")
            first = max(done, stage.first_epoch)
            fitted = self.fit_stage(model, stage, first)
            for key, values in fitted.history.items():
                history.setdefault(key, []).extend(float(v) for v in values)
            done = first + len(fitted.epoch)
            if self.stopper.signal_name or done < stage.end_epoch:  # or NaN, or a callback
                break
        return self.finish(model, history, done, time.perf_counter() - started)

    def say_model(self, model) -> None:
        """The model's line at the start of a run: components, size, the run folder."""
        c = self.config
        basic = model.get_layer(BASIC_MODEL)
        head = head_layer(model)
        extra = (f"{head.count_params():,} more in the head over {len(self.source.classes)} "
                 "identities" if head is not None else "no head: trained without labels")
        print(f"Model: {self.plan.backbone.name} backbone, {self.plan.neck.name} neck, "
              f"{c.embedding_size}-d embedding: {basic.count_params():,} parameters "
              f"({extra}); run folder: {self.run_dir}")
        distillation = self.distillation(model)
        if distillation is not None:
            projection = (f", through a {c.embedding_size}->{distillation.teacher_width} "
                          "projection" if distillation.projection is not None else "")
            print(f"Teacher: {c.teacher} ({distillation.teacher.count_params():,} "
                  f"parameters, {distillation.teacher_size}x{distillation.teacher_size} "
                  f"input), {c.distill_loss} distance x {c.distill_weight:g}{projection}")
            self.say_teacher_alignment()

    def say_teacher_alignment(self) -> None:
        """A warning when the teacher was trained on faces aligned otherwise than the
        training images: it sees them resized, not realigned."""
        from facekit.data.prepare import describe_alignment
        from facekit.run_folder import trained_alignment

        teacher = trained_alignment(self.plan.teacher)
        data = preprocessing(self.source.path)
        if teacher and data and teacher.get("template") != data.get("template"):
            print(f"Note: the teacher expects {describe_alignment(teacher)}, but the training "
                  f"images are {describe_alignment(data)}; it sees them resized, not "
                  "realigned (prepare them with the teacher's --template).")

    @staticmethod
    def distillation(model):
        """The training model's Distillation layer, or None."""
        found = getattr(model, "distillation", None)  # partial-fc's model keeps it
        if found is None and DISTILLATION_LAYER in [layer.name for layer in model.layers]:
            found = model.get_layer(DISTILLATION_LAYER)
        return found

    def stage_model(self, stage: StagePlan, model, loss):
        """The training model of a stage that starts now.

        The basic model carries over from the previous stage (or is built, and
        loaded from ``init_from``).  So does the head when the stage keeps it, and
        with it the loss's state when the loss keeps the same state; a head that
        must now also output the embedding norm is rebuilt with the same weights.
        """

        config, classes = self.config, len(self.source.classes)
        state = initial_state(loss, classes)
        distillation = self.distillation(model) if model is not None else None
        if distillation is None and config.teacher:
            distillation = Distillation(load_teacher(self.plan.teacher), config.distill_loss,
                                        config.distill_weight,
                                        student_width=config.embedding_size)
        if model is None:
            basic_model = build_basic_model(
                self.plan.backbone, self.plan.neck, image_size=config.image_size,
                embedding_size=config.embedding_size, dropout=config.dropout,
                embedding_bn=config.embedding_bn)
            if config.init_from:
                init_basic_model(basic_model, resolve_model(config.init_from))
        else:
            basic_model = model.get_layer(BASIC_MODEL)
        names = [layer.name for layer in model.layers] if model is not None else []
        old_state = model.get_layer(STATE_LAYER) if STATE_LAYER in names else None
        same_state = set(state) == set(old_state.initial if old_state else {})
        width = classes + int(bool(stage.head.extra.get("append_norm")))
        keeps_head = stage.keeps_head and model is not None and not config.no_labels
        width_now = keeps_head and head_layer(model).compute_output_shape(
            basic_model.output_shape)[-1]
        if model is None or not (config.no_labels or keeps_head and width_now == width
                                 and same_state):
            previous = model
            model = build_training_model(basic_model, classes,
                                         None if config.no_labels else stage.head,
                                         augmentation=self.plan.augmentation,
                                         seed=config.seed, state=state,
                                         distillation=distillation)
            if keeps_head:
                head_layer(model).set_weights(head_layer(previous).get_weights())
            if state and same_state:
                model.get_layer(STATE_LAYER).set_weights(old_state.get_weights())
        freeze(basic_model, stage.config.frozen)
        return model

    def compile(self, model, stage: StagePlan, loss) -> None:

        c = stage.config
        rate = learning_rate(c.schedule, c.lr or DEFAULT_LR[c.optimizer],
                             steps_per_epoch=self.steps, epochs=c.epochs,
                             warmup_epochs=c.warmup_epochs, decay_rate=c.decay_rate,
                             step_epochs=tuple(c.step_epochs),
                             per_epoch=c.schedule_per == "epoch")
        bind_loss_state(model, loss)
        optimizer = make_optimizer(c.optimizer, rate, c.weight_decay,
                                   ema_momentum=c.ema_momentum if c.ema else None)
        model.compile(optimizer=optimizer, loss=loss,
                      metrics=[] if c.no_labels else [ClassAccuracy(len(self.source.classes))],
                      jit_compile=self.devices.jit_compile(self.config.jit_compile))

    def fit_stage(self, model, stage: StagePlan, first: int):
        """``model.fit`` over the stage's epochs from ``first``; its Keras History."""

        train, val, val_steps, own = self.stage_data(skip_batches=first * self.steps)
        append = self.plan.resume is not None or first > 0
        fenced = contextlib.nullcontext()
        if self.devices.cluster is not None:

            fenced = multi_worker_fit(model)
        with fenced:
            return model.fit(train, epochs=stage.end_epoch, initial_epoch=first,
                             steps_per_epoch=self.steps, validation_data=val,
                             validation_steps=val_steps, shuffle=False,
                             verbose=self.keras_verbose,
                             callbacks=self.callbacks(stage, model, own, append, first)
                             + self.extra_callbacks + [RunProgbar(self.plan.total_epochs)])

    def stage_data(self, skip_batches: int):
        """(training input, validation input, validation steps, this process's own
        training data) for ``model.fit``.

        On a multi-worker cluster each worker reads its own share of the data,
        batched per replica, through ``distribute_datasets_from_function``; its
        validation share repeats, so every worker runs the same number of steps.
        """
        config, source, cluster = self.config, self.source, self.devices.cluster
        options = dict(seed=config.seed, skip_batches=skip_batches,
                       deterministic=config.deterministic, dropped=self.dropped)
        if cluster is None:
            train, val = source.datasets(config.image_size, self.batch_size, **options)
            # With validation_steps, Keras 3.15 raised StopIteration from the distributed
            # validation data under MirroredStrategy (seen in tests): run it to its end.
            val_steps = (-(-source.val_images // self.batch_size)
                         if val is not None and self.devices.replicas == 1 else None)
            return train, val, val_steps, train
        per_replica = self.batch_size // self.devices.replicas

        def share(training):
            def dataset(context):
                train, val = source.datasets(config.image_size, per_replica, **options,
                                             workers=cluster.workers,
                                             worker=context.input_pipeline_id)
                return train if training else val.repeat()
            return dataset

        strategy = self.devices.strategy
        train = strategy.distribute_datasets_from_function(share(True))
        val = (strategy.distribute_datasets_from_function(share(False))
               if source.val_images else None)
        own, _ = source.datasets(config.image_size, per_replica, **options,
                                 workers=cluster.workers, worker=cluster.index)
        val_steps = max(1, source.val_images // self.batch_size) if val is not None else None
        return train, val, val_steps, own

    def callbacks(self, stage: StagePlan, model, own_data, append: bool, first: int) -> list:
        """facekit's callbacks for one stage, in order: a signal stops the epoch first;
        statistics are recalibrated (and agreed between workers) before verification;
        every figure is in the logs before the checkpoints and the history files read
        them.  Only the chief writes files."""


        c, devices = stage.config, self.devices
        callbacks = [self.stopper, keras.callbacks.TerminateOnNaN(), DroppedLog(self.dropped)]
        if len(self.plan.stages) > 1:
            callbacks.append(StageLog(stage.number))
        averaged = AveragedWeights() if c.ema else None
        if averaged is not None:  # the average is what is recalibrated, measured and kept
            callbacks.append(averaged.swap_in)
        if c.bn_recalibration_batches and c.frozen == "none":  # frozen BN statistics stay
            callbacks.append(BatchNormRecalibration(  # never more batches than an epoch has
                model.get_layer(BASIC_MODEL), own_data,
                min(c.bn_recalibration_batches, self.steps), self.steps))
        if devices.cluster is not None:
            callbacks.append(AverageStatistics(devices.strategy))
        if self.eval_sets:
            callbacks.append(VerificationCallback(self.eval_sets))
        if self.best is not None:
            callbacks.append(self.best)
        if averaged is not None:  # a checkpoint holds the trained weights (and the average)
            callbacks.append(averaged.swap_out)
        # A run resumes from the chief's checkpoints; the other workers keep their last.
        callbacks.append(EpochCheckpoint(self.own_dir, c.keep_checkpoints if devices.chief
                                         else 1, self.stopper, self.best,
                                         architecture(self.config)))
        if devices.chief:
            callbacks.append(HistoryFiles(self.own_dir, keep_before=first if append else None))
            if c.tensorboard:
                callbacks.append(keras.callbacks.TensorBoard(
                    log_dir=str(self.own.tensorboard)))
        return callbacks

    def save_training_model(self, model, done: int) -> None:
        """``model.keras``: the last checkpoint is this very model, so it becomes a second
        name of that file (a hard link, else a copy), and the earlier checkpoints, kept
        against a failure during the run, are removed (resume needs only the last)."""
        run = self.plan.run
        state = run.read_state() if self.devices.chief else None
        last = run.checkpoint(state.checkpoint) if state and state.epoch == done else None
        if last is None or self.devices.cluster is not None:
            model.save(self.own.model)  # on a cluster every worker saves: saving gathers
        else:                           # what the workers share
            with unique_temporary(self.own.model) as temporary:
                temporary.unlink()
                try:
                    os.link(last, temporary)
                except OSError:  # no hard links here (some network file systems)
                    shutil.copyfile(last, temporary)
                os.replace(temporary, self.own.model)
        if last is not None:
            for _, path in run.saved_checkpoints():
                if path != last:
                    path.unlink()

    def say_next(self, last_logs: dict) -> None:
        """The end of a run: the folder and its size, a verification figure, and the
        commands that come next."""
        run = self.run_dir
        print(f"Run folder: {run} ({folder_size(run) / 1e6:,.0f} MB)")
        figures = {key: value for key, value in last_logs.items() if key.startswith("eval/")}
        for key, value in figures.items():
            print(f"Verification {key[5:]}: {value:.4f} (accuracy on people held out of "
                  "training)")
        data = self.source.path
        if self.config.data is None:
            print("Next: measure it on people it never saw, then compare two faces:\n"
                  "  facekit demo-data unseen-demo --seed 1\n"
                  f"  facekit eval --model {run} --data unseen-demo --auto-pairs 600\n"
                  "  facekit compare unseen-demo/person_000/0000.jpg "
                  f"unseen-demo/person_000/0001.jpg --model {run}\n"
                  f"  ({run / 'training.png'} plots the loss and accuracy)")
        else:
            print("Next: measure it on people it never saw, then compare two faces:\n"
                  f"  facekit eval --model {run} --data FOLDER --auto-pairs 600   "
                  f"(FOLDER: other people than {data})\n"
                  f"  facekit compare A.jpg B.jpg --model {run}\n"
                  f"  ({run / 'training.png'} plots the loss and accuracy)")

    def finish(self, model, history: dict, done: int, elapsed: float) -> TrainResult:
        """Save the final models (a completed run only) and say what happened."""

        epochs_run = done - self.resumed_epochs
        result = TrainResult(self.run_dir, history, interrupted=self.stopper.signal_name,
                             seconds=elapsed, images=self.steps * self.batch_size * epochs_run)
        last_logs = {key: values[-1] for key, values in history.items() if values}
        basic_model = model.get_layer(BASIC_MODEL)
        # A NaN in the last epoch stops it too (TerminateOnNaN), though Keras counts it
        # done; and a NaN never becomes a saved model, whatever the logs say.
        diverged = has_nan(last_logs) or not all(
            np.isfinite(weight).all() for weight in basic_model.get_weights())
        if self.stopper.signal_name or diverged or done < self.plan.total_epochs:
            state = self.plan.run.read_state()
            saved = state.epoch if state is not None else 0
            reason = self.stopper.signal_name or ("NaN loss" if diverged else "a callback")
            result.stopped = reason
            where = (f" ({self.plan.run.checkpoint(state.checkpoint)}, which facekit eval "
                     "--model takes)" if state is not None else "")
            print(f"\nStopped by {reason}; the last good checkpoint is epoch {saved}{where}. "
                  f"Continue with: facekit train --resume {self.run_dir}")
            return result
        best = self.best
        self.save_training_model(model, done)
        if self.plan.stages[-1].config.ema:  # the saved basic models are the average
            AveragedWeights.swap(model)
        if best is None or best.best_epoch is None:
            basic_model.save(self.own.basic_model)
        elif best.best_epoch + 1 != done:  # the best epoch is not the last: keep both
            basic_model.save(self.own_dir / "basic_model_last.keras")
        if not self.config.verbose:
            return result
        if epochs_run == 0:  # resumed after the last checkpoint
            print(f"All {done} epochs were trained; wrote the final models from the last "
                  "checkpoint.")
        else:
            checked = (", validation" if self.source.val_images else "") + (
                ", verification" if self.eval_sets else "")
            print(f"Trained {epochs_run} epoch(s) in {elapsed:.1f}s "
                  f"({result.images / elapsed:.1f} images/s{checked} and checkpoints "
                  "included)")
        if best is not None and best.best_epoch is not None:
            print(f"Best epoch {best.best_epoch + 1}: {self.monitor} {best.best:.4f} "
                  "(basic_model.keras)")
        self.say_next(last_logs)
        return result
