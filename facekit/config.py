"""The training configuration, every option declared once.

Each field of :class:`TrainConfig` is declared with :func:`option`: its default,
help text, help panel, choices, command-line flag, whether a stage may set it,
and its check.  Everything else is derived from these declarations: the
parameters of ``facekit train`` (facekit.cli), validation, the keys a
``[[stages]]`` table may set, the ``run.toml`` reader and the option table in
``docs/options.md`` (``python -m facekit.config`` prints it).

Error messages name an option the way the user gave it: ``--batch-size`` on
the command line, ``batch_size`` in a TOML file or a Python call (see
:class:`OptionError`).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facekit.data.augment import LEVELS, Augmentation
from facekit.declare import (Check, OptionSpec, at_least, between, comma_ints, fraction,
                             option, positive)
from facekit.errors import FacekitError, OptionError
from facekit.files import read_text

# Each optimizer's default learning rate: Adam's 5e-3 measured best on the LFW subset
# (docs/training.md); the others are Keras'.
DEFAULT_LR = {"adamax": 1e-3, "adam": 5e-3, "adamw": 1e-3, "sgd": 1e-2}
OPTIMIZERS = tuple(DEFAULT_LR)
# The head a run gets when it names none: the one that gives its loss what it expects.
DEFAULT_HEADS = {"logits": "softmax", "cosine": "normdense", "cosine+norm": "normdense"}
SCHEDULES = ("constant", "cosine", "exponential", "step")
SCHEDULE_PER = ("step", "epoch")
SPLITS = ("images", "identities")
FROZEN = ("none", "backbone", "basic_model")
CLUSTERS = ("auto", "slurm", "none")  # where a multi-worker cluster is described
DISTANCES = ("cosine", "l2")  # the distillation losses (facekit.fit.distill.distance)

# Options whose default follows from another option (facekit.plan.with_rules writes
# them out): the rate from the optimizer, the head from the loss, the augmentation
# switches from the level.
DERIVED = {"optimizer": ("lr",), "loss": ("head",),
           "augment": tuple(field.name for field in dataclasses.fields(Augmentation))}

# The help panels of ``facekit train --help``, in order.
(DATA, MODEL, OPTIMIZATION, DISTILLATION, AUGMENTATION, EVALUATION, LOGS, HARDWARE,
 STAGES) = PANELS = (
    "Data", "Model", "Optimization and schedule", "Distillation and weight averaging",
    "Augmentation", "Evaluation", "Checkpoints and logs", "Hardware and cluster", "Stages")


@dataclass
class TrainConfig:
    """Every option of ``facekit train``; defaults follow the design notes."""

    # Data
    data: str | None = option(
        None, "Folder of identity sub-folders (DATA/<identity>/<image>), a glob pattern, "
        "packed shards, or a folder holding insightface's train.rec and train.idx. Default: the built-in demo dataset.", DATA, metavar="PATH")
    image_size: int = option(112, "Input images are resized to this square.", DATA,
                             check=between(32, 1024))
    batch_size: int = option(64, "Images per batch (the global batch on several devices).",
                             DATA, check=between(1, 65536))
    val_split: float = option(0.0, "Fraction held out for validation (0: every image trains).",
                              DATA, check=fraction())
    split_by: str = option(
        "images", "Hold out images of every identity (closed-set classification) or whole "
        "identities (open-set: verification on the held-out people, logged as eval/val).",
        DATA, choices=SPLITS)
    class_balance: float = option(
        0.0, "Sample training images with replacement, each with weight n**-POWER where n "
        "is its identity's image count: 0 reads every image once per epoch, 1 gives every "
        "identity the same share, 0.5 is between.", DATA, metavar="POWER",
        check=fraction(high_open=False))
    seed: int = option(0, "Seed for the split, shuffling and weights.", DATA)
    # Model
    backbone: str = option("mobilenetv2", "Backbone name (see list-plugins).", MODEL)
    backbone_options: dict = option(
        {}, "Backbone option KEY=VALUE, repeatable (e.g. alpha=0.5).", MODEL,
        flag="--backbone-opt", metavar="KEY=VALUE")
    embedding_size: int = option(
        128, "Size of the embedding (insightface's models, for large datasets: 512).", MODEL,
        check=between(1, 65536))
    neck: str | None = option(
        None, "Neck from the backbone's feature map to the embedding (see list-plugins). "
        "Default: the neck the backbone names.", MODEL, metavar="NAME")
    neck_options: dict = option({}, "Neck option KEY=VALUE, repeatable.", MODEL,
                                flag="--neck-opt", metavar="KEY=VALUE")
    dropout: float = option(0.4, "Dropout in the neck, before its dense layer.", MODEL,
                            check=fraction())
    embedding_bn: bool = option(
        True, "A BatchNorm on the embedding (its scale fixed at 1), as insightface's models "
        "end.", MODEL)
    head: str | None = option(
        None, "Head name (see list-plugins). Default: softmax for a loss that takes logits, "
        "normdense for one that takes cosines.", MODEL, stage=True, metavar="NAME")
    head_options: dict = option({}, "Head option KEY=VALUE, repeatable.", MODEL,
                                flag="--head-opt", stage=True, metavar="KEY=VALUE")
    loss: str = option("softmax", "Loss name (see list-plugins).", MODEL, stage=True)
    loss_options: dict = option({}, "Loss option KEY=VALUE, repeatable (e.g. scale=32).",
                                MODEL, flag="--loss-opt", stage=True, metavar="KEY=VALUE")
    # Optimization and schedule
    epochs: int = option(25, "Number of epochs (on --resume: the new total).", OPTIMIZATION,
                         stage=True, check=at_least(1))
    steps_per_epoch: int | None = option(
        None, "Batches per epoch. Default: one pass over the training images.",
        OPTIMIZATION, check=at_least(1))
    optimizer: str = option("adam", "Optimizer (SGD with momentum 0.9).", OPTIMIZATION,
                            choices=OPTIMIZERS, stage=True)
    lr: float | None = option(
        None, "Learning rate. Default: " + ", ".join(
            f"{rate:g} ({name})" for name, rate in DEFAULT_LR.items()) + ".",
        OPTIMIZATION, stage=True, check=positive())
    weight_decay: float | None = option(None, "Decoupled weight decay of the optimizer.",
                                        OPTIMIZATION, stage=True, check=at_least(0))
    schedule: str = option(
        "cosine", "Learning-rate schedule: constant, cosine (after --warmup-epochs), "
        "exponential (times --decay-rate per epoch) or step (times --decay-rate at each of "
        "--step-epochs).", OPTIMIZATION, choices=SCHEDULES, stage=True)
    warmup_epochs: float = option(0.0, "Linear warm-up epochs before the cosine decay.",
                                  OPTIMIZATION, stage=True, check=at_least(0))
    decay_rate: float = option(0.1, "Decay factor of the exponential and step schedules.",
                               OPTIMIZATION, stage=True, check=fraction(True, False))
    step_epochs: list[int] = option(
        [], "Epochs where the step schedule decays, e.g. 10,15.", OPTIMIZATION, stage=True,
        from_text=comma_ints, metavar="N,N")
    schedule_per: str = option("step", "Change the rate every step, or once per epoch.",
                               OPTIMIZATION, choices=SCHEDULE_PER, stage=True)
    bn_recalibration_batches: int = option(
        20, "Training batches used to recompute BatchNorm statistics at the end of each "
        "epoch (precise BN), so inference-mode embeddings are right even on short runs; "
        "0 turns it off.", OPTIMIZATION, flag="--bn-recalibration", stage=True,
        check=at_least(0))
    # Distillation and weight averaging
    teacher: str | None = option(
        None, "Distil this embedding model into the one being trained: a run folder, a "
        ".keras model, dlib, or a file facekit import reads (an insightface .onnx, an "
        "arcface_torch .pth). It sees each augmented batch at its own input size "
        "(docs/training.md).", DISTILLATION, metavar="MODEL")
    distill_loss: str = option(
        "cosine", "Distance between the student's and the teacher's embeddings: cosine "
        "(1 - cos) or l2 (squared, raw embeddings).", DISTILLATION, choices=DISTANCES)
    distill_weight: float = option(
        1.0, "Weight of the distillation loss against the head's loss.", DISTILLATION,
        check=positive())
    no_labels: bool = option(
        False, "Learn from the teacher alone, without identities or a head: every image "
        "under --data counts, in identity sub-folders or not (a folder of images with no "
        "sub-folders needs no flag).", DISTILLATION)
    ema: bool = option(
        False, "Average the weights (exponential moving average): the averaged ones are "
        "evaluated and saved as the models; checkpoints keep both.", DISTILLATION)
    ema_momentum: float = option(
        0.99, "Momentum of the weight average (0.99: about the last 100 steps).",
        DISTILLATION, check=fraction())
    # Augmentation
    augment: str = option(
        "strong", "Augmentation level: none, flip, light (flip, brightness/contrast 0.1, crop "
        "0.9) or strong (also saturation 0.2, crop 0.8, grayscale 0.1). Runs on the "
        "accelerator, never on validation data.", AUGMENTATION, choices=tuple(LEVELS))
    flip: bool | None = option(None, "Random horizontal flips (overrides --augment).",
                               AUGMENTATION)
    brightness: float | None = option(
        None, "Random brightness change, as a fraction (overrides --augment).", AUGMENTATION,
        check=fraction(high_open=False))
    contrast: float | None = option(
        None, "Random contrast change, as a fraction (overrides --augment).", AUGMENTATION,
        check=fraction(high_open=False))
    saturation: float | None = option(
        None, "Random saturation change, as a fraction (overrides --augment).", AUGMENTATION,
        check=fraction(high_open=False))
    crop_scale: float | None = option(
        None, "Random crop-and-resize keeping at least this fraction of the side, in "
        "[0.1, 1] (overrides --augment).", AUGMENTATION,
        check=Check(lambda value: 0.1 <= value <= 1, "must be in [0.1, 1]"))
    grayscale: float | None = option(
        None, "Probability of turning an image gray (overrides --augment).", AUGMENTATION,
        check=fraction(high_open=False))
    erasing: float | None = option(
        None, "Probability of erasing a random rectangle (2-33% of the image) with noise "
        "(overrides --augment).", AUGMENTATION, check=fraction(high_open=False))
    # Evaluation
    eval_pairs: list[str] = option(
        [], "Verification pairs file (LFW pairs.txt format) to run after each epoch; "
        "repeatable, one per --eval-data.", EVALUATION, metavar="FILE")
    eval_data: list[str] = option([], "Image folder of the matching --eval-pairs file.",
                                  EVALUATION, metavar="DIR")
    eval_bins: list[str] = option(
        [], "insightface verification .bin to run after each epoch; repeatable.",
        EVALUATION, flag="--eval-bin", metavar="FILE")
    best_by: str | None = option(
        None, "Logged figure that picks basic_model.keras, e.g. val_accuracy or eval/NAME "
        "(NAME: the pairs or .bin file name without extension). Default: val_accuracy with "
        "a validation split, else the last epoch.", EVALUATION)
    # Checkpoints and logs
    output: str | None = option(None, "Run folder. Default: runs/<timestamp>.", LOGS,
                                metavar="DIR")
    keep_checkpoints: int = option(3, "Per-epoch checkpoints of the full training state to "
                                   "keep.", LOGS, check=at_least(1))
    tensorboard: bool = option(False, "Write TensorBoard logs to RUN/tensorboard.", LOGS)
    verbose: int = option(1, "0: quiet; 1: progress bars and summaries (one line per epoch "
                          "when the output is not a terminal); 2: one line per epoch.", LOGS,
                          cli=False, check=between(0, 2))
    # Hardware and cluster
    devices: str | None = option(
        None, "Devices to train on, e.g. gpu:0,gpu:1 (MirroredStrategy). Default: every "
        "GPU, else the CPU.", HARDWARE)
    mixed_precision: bool = option(
        False, "float16 on GPUs (bfloat16 on CPUs), with the embedding and loss in float32.",
        HARDWARE)
    jit_compile: bool | None = option(
        None, "Compile the train step with XLA. Default: off on CPUs (much slower there for "
        "MobileNets, faster for ResNets: docs/training.md), Keras' choice on GPUs.", HARDWARE)
    deterministic: bool = option(
        False, "Deterministic ops and input order, so a run can be repeated exactly "
        "(slower).", HARDWARE)
    cluster: str = option(
        "auto", "Multi-worker training: auto (when TF_CONFIG lists several workers), slurm "
        "(from the Slurm job) or none. See docs/distributed.md.", HARDWARE, choices=CLUSTERS)
    collective_timeout: float = option(
        300.0, "Seconds a worker waits for the others during training before it stops with "
        "an error.", HARDWARE, check=positive())
    cluster_start_timeout: float = option(
        300.0, "Seconds a worker waits for the others to start before it gives up.",
        HARDWARE, check=positive())
    # Stages
    init_from: str | None = option(
        None, "Start from these basic-model weights: a run folder, a .keras model, a "
        ".weights.h5 file (same backbone and embedding size), dlib (its public-domain "
        "face model) or a file facekit import reads (an arcface_torch .pth); the network "
        "options come with a run folder or an import.", STAGES, metavar="PATH")
    freeze_backbone_epochs: int = option(
        0, "Train the first N epochs with the backbone frozen, then unfreeze and go on "
        "(part of --epochs).", STAGES, stage=True, check=at_least(0))
    freeze_basic_model_epochs: int = option(
        0, "Train the first N epochs with the whole basic model frozen (only the head "
        "learns), then unfreeze and go on (part of --epochs).", STAGES, stage=True,
        check=at_least(0))
    frozen: str = option("none", "What this stage does not train.", STAGES, choices=FROZEN,
                         stage=True, cli=False)
    stages: list[dict] = option(
        [], "The run's stages in order, each a table of stage options ([[stages]]).", STAGES,
        cli=False)

    def checked(self) -> "TrainConfig":
        """This configuration with every value type-checked and normalized (an int for a
        float option becomes a float, a path a string), each stage too; an OptionError
        names the first bad one."""
        config = TrainConfig(**{option.name: _checked_value(option, getattr(self, option.name))
                                for option in OPTIONS.values()})
        config._check_combinations()
        stages = []
        for number, stage in enumerate(config.stages, 1):
            unknown = sorted(set(stage) - set(STAGE_KEYS))
            if unknown:
                raise FacekitError(
                    f"Stage {number} sets {', '.join(unknown)}, which cannot change between "
                    f"stages; set it at the top of the config file. A stage may set: "
                    f"{', '.join(STAGE_KEYS)}.")
            try:
                checked = dataclasses.replace(config, stages=[], **stage).checked()
            except OptionError as exc:
                raise OptionError(f"Stage {number}: {exc.template}", **exc.values) from None
            stages.append({key: getattr(checked, key) for key in stage})
        config.stages = stages
        config.stage_configs()  # frozen epochs must leave unfrozen ones
        return config

    def _check_combinations(self) -> None:
        if self.schedule == "step" and not self.step_epochs:
            raise OptionError("{schedule} step needs {step_epochs}, e.g. 10,15.")
        if len(self.eval_pairs) != len(self.eval_data):
            raise OptionError("Give one {eval_data} folder for each {eval_pairs} file "
                              "(got {pairs} pairs files and {folders} folders).",
                              pairs=len(self.eval_pairs), folders=len(self.eval_data))
        if self.no_labels and not self.teacher:
            raise OptionError("{no_labels} trains from a teacher's embeddings; name one "
                              "with {teacher}.")
        if self.no_labels and self.split_by == "identities":
            raise OptionError("{split_by} identities needs identities; without labels "
                              "({no_labels}) hold out images.")
        if self.freeze_backbone_epochs and self.freeze_basic_model_epochs:
            raise OptionError("Give either {freeze_backbone_epochs} or "
                              "{freeze_basic_model_epochs}, not both.")

    def stage_configs(self) -> list["TrainConfig"]:
        """The run's stages in order, each a whole configuration.

        Without ``stages`` the run is one stage.  ``freeze_*_epochs`` N turns a
        stage into N frozen epochs followed by the rest of its epochs unfrozen.
        """
        stages = [dataclasses.replace(self, stages=[], **stage) for stage in self.stages]
        expanded = []
        for stage in stages or [dataclasses.replace(self, stages=[])]:
            part = ("backbone" if stage.freeze_backbone_epochs else
                    "basic_model" if stage.freeze_basic_model_epochs else None)
            if part is None:
                expanded.append(stage)
                continue
            n = getattr(stage, f"freeze_{part}_epochs")
            if n >= stage.epochs:
                raise OptionError(f"{{freeze_{part}_epochs}} ({n}) must be less than "
                                  f"{{epochs}} ({stage.epochs}): the unfrozen epochs follow "
                                  "the frozen ones.")
            unfrozen = dataclasses.replace(stage, freeze_backbone_epochs=0,
                                           freeze_basic_model_epochs=0)
            expanded += [dataclasses.replace(unfrozen, epochs=n, frozen=part),
                         dataclasses.replace(unfrozen, epochs=stage.epochs - n)]
        return expanded

    @property
    def total_epochs(self) -> int:
        return sum(stage.epochs for stage in self.stage_configs())

    def with_overrides(self, **options) -> "TrainConfig":
        """Options given on the command line (or to ``facekit.train``) win everywhere:
        at the top level and in this configuration's stages.  New ``stages`` given
        with them are taken as written, the other options being their defaults.

        An option that decides other options' defaults (``DERIVED``) resets them unless
        they are given too: ``--config RUN/config.toml --optimizer sgd`` trains at SGD's
        default rate, not at the rate the file recorded for Adam."""
        unknown_options(options)
        for deciding, derived in DERIVED.items():  # --optimizer sgd: with SGD's own rate
            if deciding in options:
                options = {**{key: None for key in derived}, **options}
        if "stages" in options:
            return dataclasses.replace(self, **options)
        staged = {key: value for key, value in options.items() if key in STAGE_KEYS}
        stages = [{**stage, **staged} for stage in self.stages]
        return dataclasses.replace(self, **options, stages=stages)

    def augmentation(self):
        from facekit.data.augment import resolve_augmentation

        return resolve_augmentation(
            self.augment, flip=self.flip, brightness=self.brightness, contrast=self.contrast,
            saturation=self.saturation, crop_scale=self.crop_scale, grayscale=self.grayscale,
            erasing=self.erasing)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        data = _renamed(data)
        unknown_options(data)
        return cls(**data)


@dataclass(frozen=True)
class Declared:
    """One declared option: its field's name, type and default, and its spec."""

    name: str
    type: Any
    default: Any
    spec: OptionSpec

    @property
    def flag(self) -> str | None:
        if not self.spec.cli:
            return None
        return self.spec.flag or "--" + self.name.replace("_", "-")

    @property
    def negated_flag(self) -> str | None:
        """``--no-x`` for a switch whose default is unset (None) or on, so either way
        can be asked for; None for every other option."""
        if self.flag and self.base_type is bool and (self.optional or self.default):
            return f"--no-{self.flag[2:]}"
        return None

    @property
    def base_type(self):
        """int, float, str, bool, list or dict, without ``| None``."""
        args = [a for a in typing.get_args(self.type) if a is not type(None)]
        base = args[0] if isinstance(self.type, types.UnionType) else self.type
        return typing.get_origin(base) or base

    @property
    def optional(self) -> bool:
        return type(None) in typing.get_args(self.type)


def declared() -> list[Declared]:
    """Every option, in declaration order."""
    hints = typing.get_type_hints(TrainConfig)
    return [Declared(f.name, hints[f.name],
                     f.default_factory() if f.default is dataclasses.MISSING else f.default,
                     f.metadata["facekit"])
            for f in dataclasses.fields(TrainConfig)]


OPTIONS = {option.name: option for option in declared()}
STAGE_KEYS = tuple(name for name, option in OPTIONS.items() if option.spec.stage)


def _renamed(data: dict) -> dict:
    """A configuration saved by an older facekit, in today's keys: ``pooling`` is now
    ``neck``, and those runs had no embedding BatchNorm."""
    if "pooling" not in data:
        return data
    data = dict(data)
    data.setdefault("neck", data.pop("pooling"))
    data.setdefault("embedding_bn", False)
    return data


def unknown_options(data: dict) -> None:
    unknown = sorted(set(data) - set(OPTIONS))
    if unknown:
        raise FacekitError(f"Unknown training option(s): {', '.join(unknown)}; "
                           f"valid ones: {', '.join(sorted(OPTIONS))}.")


_TYPE_NAMES = {int: "a whole number", float: "a number", str: "text", bool: "true or false",
               list: "a list", dict: "a table of options"}


def _checked_value(option: Declared, value):
    """``value`` of the option's type (ints widened to floats, paths to strings), inside
    its choices and its check; else an OptionError naming the option."""
    spec, kind = option.spec, option.base_type
    if value is None and option.optional:
        return None
    if kind is str and isinstance(value, os.PathLike):
        value = os.fspath(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is list and isinstance(value, tuple):
        value = list(value)
    if kind is dict and isinstance(value, (list, tuple)):  # KEY=VALUE strings (the CLI's)
        ok = all(isinstance(item, str) for item in value)
    elif kind is list:
        item = typing.get_args(option.type)[0]
        item = typing.get_origin(item) or item
        value = [os.fspath(v) if item is str and isinstance(v, os.PathLike) else v
                 for v in value] if isinstance(value, list) else value
        ok = isinstance(value, list) and all(
            isinstance(v, item) and not (item is int and isinstance(v, bool)) for v in value)
    else:
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if not ok:
        raise OptionError("{%s} must be %s, got {value!r}." % (
            option.name, _TYPE_NAMES.get(kind, kind.__name__)), value=value)
    if spec.choices and value not in spec.choices:
        raise OptionError("{%s} must be one of {choices}, got '{value}'." % option.name,
                          choices=", ".join(spec.choices), value=value)
    if spec.check and isinstance(value, (int, float)) and not spec.check.accepts(value):
        raise OptionError("{%s} %s, got {value}." % (option.name, spec.check.rule),
                          value=value)
    return value


def read_config_file(path: str | Path) -> dict:
    """The options of a run.toml file (dashes in keys allowed, as on the command line)."""
    import tomllib

    path = Path(path)
    if path.is_dir():
        path = path / "config.toml"
    if not path.is_file():
        raise FacekitError(f"The config file '{path}' does not exist.")
    try:
        data = tomllib.loads(read_text(path, "The config file"))
    except tomllib.TOMLDecodeError as exc:
        raise FacekitError(f"The config file '{path}' is not valid TOML: {exc}.") from None
    data = _underscored(data)
    stages = data.get("stages", [])
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        raise FacekitError(f"In '{path}', stages must be a list of tables ([[stages]]).")
    data["stages"] = [_underscored(stage) for stage in stages]
    data = _renamed(data)
    unknown_options(data)
    return data


def write_config_file(config: TrainConfig, path: Path) -> None:
    """Save ``config`` as TOML, so ``facekit train --config PATH`` runs it again."""
    import tomli_w

    data = {k: v for k, v in config.to_dict().items() if k != "output"}
    Path(path).write_text(tomli_w.dumps(_without_none(data)))


def _underscored(table: dict) -> dict:
    return {key.replace("-", "_"): value for key, value in table.items()}


def _without_none(value):
    """TOML has no null: an option left at None is simply not written."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def options_markdown() -> str:
    """docs/options.md: every option of ``facekit train``, by help panel."""
    import json

    lines = ["# `facekit train` options", "",
             "Generated from the declarations in `facekit/config.py` by "
             "`python -m facekit.config > docs/options.md`; a test keeps the two equal.",
             "Each option is a *key* of a `run.toml` file (`--config`) and an argument of "
             "`facekit.train(...)`; the *stage* ones may also be set in each `[[stages]]` "
             "table of a run.toml.", ""]
    for panel in PANELS:
        lines += [f"## {panel}", "", "| key | flag | default | stage | what |",
                  "|---|---|---|---|---|"]
        for entry in OPTIONS.values():
            if entry.spec.panel != panel:
                continue
            default = ("" if entry.default in (None, [], {})
                       else f"`{json.dumps(entry.default)}`")
            if entry.spec.choices:
                default += " of " + ", ".join(f"`{c}`" for c in entry.spec.choices)
            flag = f"`{entry.flag}`" if entry.flag else "(file only)"
            if entry.negated_flag:
                flag += f", `{entry.negated_flag}`"
            what = entry.spec.help.replace("<", "&lt;").replace("|", "\\|")
            lines.append(f"| `{entry.name}` | {flag} | {default} | "
                         f"{'yes' if entry.spec.stage else ''} | {what} |")
        lines.append("")
    lines += ["Only on the command line: `--config FILE` (a run.toml file; options typed on "
              "the command line override it, in every stage) and `--resume RUN`.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(options_markdown(), end="")
