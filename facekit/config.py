"""The training configuration: one dataclass shared by the CLI, the Python API and
run.toml files (top-level keys are the fields; ``[[stages]]`` tables list stages)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from facekit.errors import FacekitError

OPTIMIZERS = ("adamax", "adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "exponential", "step")
FROZEN = ("none", "backbone", "basic_model")
CLUSTERS = ("auto", "slurm", "none")  # where a multi-worker cluster is described
# What may change from one stage to the next; the rest (data, backbone, batch...) is the run's.
STAGE_FIELDS = ("head", "loss", "head_options", "loss_options", "epochs", "optimizer", "lr",
                "weight_decay", "schedule", "warmup_epochs", "decay_rate", "step_epochs",
                "schedule_per", "frozen", "freeze_backbone_epochs",
                "freeze_basic_model_epochs", "bn_recalibration_batches")


@dataclass
class TrainConfig:
    """Every option of ``facekit train``; defaults follow the design notes."""

    data: str | None = None  # None: the built-in demo dataset
    backbone: str = "mobilenetv2"
    head: str = "normdense"
    loss: str = "arcface"
    backbone_options: dict = field(default_factory=dict)
    head_options: dict = field(default_factory=dict)
    loss_options: dict = field(default_factory=dict)
    image_size: int = 112
    embedding_size: int = 512
    dropout: float = 0.1
    pooling: str = "gap"
    batch_size: int = 128
    epochs: int = 5
    steps_per_epoch: int | None = None
    val_split: float = 0.05
    optimizer: str = "adamax"
    lr: float | None = None  # None: the optimizer's usual rate
    weight_decay: float | None = None
    schedule: str = "constant"  # constant | cosine | exponential | step
    warmup_epochs: float = 0.0  # linear warm-up before cosine decay
    decay_rate: float = 0.1  # exponential: per epoch; step: at each step epoch
    step_epochs: list = field(default_factory=list)
    schedule_per: str = "step"  # change the rate every step or once per epoch
    seed: int = 0
    output: str | None = None
    split_by: str = "images"  # or "identities" (open-set: verification on held-out people)
    augment: str = "flip"  # none | flip | light | strong
    flip: bool | None = None  # individual switches override the level
    brightness: float | None = None
    contrast: float | None = None
    saturation: float | None = None
    crop_scale: float | None = None
    grayscale: float | None = None
    bn_recalibration_batches: int = 20  # precise BN at each epoch end; 0 turns it off
    eval_pairs: list = field(default_factory=list)  # pairs files, one per --eval-data folder
    eval_data: list = field(default_factory=list)
    eval_bins: list = field(default_factory=list)  # insightface .bin verification sets
    tensorboard: bool = False  # TensorBoard logs in RUN/tensorboard
    keep_checkpoints: int = 3  # per-epoch checkpoints of the full training state
    deterministic: bool = False  # deterministic ops and input order, for exact reruns
    mixed_precision: bool = False  # float16 on GPUs, bfloat16 on CPUs; embedding/loss float32
    jit_compile: bool | None = None  # XLA; None lets Keras decide
    devices: str | None = None  # None/"auto": every GPU; or "gpu:0,gpu:1", "cpu:0,cpu:1"
    cluster: str = "auto"  # multi-worker: auto (TF_CONFIG) | slurm | none
    collective_timeout: float = 300.0  # seconds before a silent worker ends the others
    best_by: str | None = None  # None: val_accuracy with a validation split, else the last
    init_from: str | None = None  # basic-model weights to start from (run folder or file)
    frozen: str = "none"  # none | backbone | basic_model: what this stage does not train
    freeze_backbone_epochs: int = 0  # first train with the backbone frozen for N epochs
    freeze_basic_model_epochs: int = 0  # ... or with the whole basic model frozen
    stages: list = field(default_factory=list)  # dicts of STAGE_FIELDS, run in order
    verbose: int = 1

    def validate(self) -> None:
        """Reject bad values with one sentence each, before anything heavy runs."""
        checks = [
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}."),
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}."),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1,
             f"--steps-per-epoch must be at least 1, got {self.steps_per_epoch}."),
            (0.0 <= self.val_split < 1.0, f"--val-split must be in [0, 1), got {self.val_split}."),
            (0.0 <= self.dropout < 1.0, f"--dropout must be in [0, 1), got {self.dropout}."),
            (self.embedding_size >= 1,
             f"--embedding-size must be at least 1, got {self.embedding_size}."),
            (self.image_size >= 32, f"--image-size must be at least 32, got {self.image_size}."),
            (self.pooling in ("gap", "flatten"),
             f"--pooling must be gap or flatten, got '{self.pooling}'."),
            (self.split_by in ("images", "identities"),
             f"--split-by must be images or identities, got '{self.split_by}'."),
            (self.optimizer in OPTIMIZERS,
             f"Unknown optimizer '{self.optimizer}'; choose one of: {', '.join(OPTIMIZERS)}."),
            (self.lr is None or self.lr > 0, f"--lr must be positive, got {self.lr}."),
            (self.schedule in SCHEDULES,
             f"Unknown schedule '{self.schedule}'; choose one of: {', '.join(SCHEDULES)}."),
            (self.schedule_per in ("step", "epoch"),
             f"--schedule-per must be step or epoch, got '{self.schedule_per}'."),
            (self.schedule != "step" or bool(self.step_epochs),
             "--schedule step needs --step-epochs, e.g. 10,15."),
            (0 < self.decay_rate <= 1, f"--decay-rate must be in (0, 1], got {self.decay_rate}."),
            (self.weight_decay is None or self.weight_decay >= 0,
             f"--weight-decay must be 0 or more, got {self.weight_decay}."),
            (len(self.eval_pairs) == len(self.eval_data),
             "Give one --eval-data folder for each --eval-pairs file "
             f"(got {len(self.eval_pairs)} pairs files and {len(self.eval_data)} folders)."),
            (self.keep_checkpoints >= 1,
             f"--keep-checkpoints must be at least 1, got {self.keep_checkpoints}."),
            (self.bn_recalibration_batches >= 0,
             f"--bn-recalibration must be 0 or more, got {self.bn_recalibration_batches}."),
            (self.cluster in CLUSTERS,
             f"--cluster must be one of {', '.join(CLUSTERS)}, got '{self.cluster}'."),
            (self.collective_timeout > 0,
             f"--collective-timeout must be positive, got {self.collective_timeout}."),
            (self.frozen in FROZEN,
             f"frozen must be one of {', '.join(FROZEN)}, got '{self.frozen}'."),
            (min(self.freeze_backbone_epochs, self.freeze_basic_model_epochs) >= 0,
             "--freeze-backbone-epochs and --freeze-basic-model-epochs must be 0 or more."),
            (isinstance(self.stages, list) and all(isinstance(s, dict) for s in self.stages),
             "stages must be a list of tables ([[stages]] in a config file)."),
        ]
        for ok, message in checks:
            if not ok:
                raise FacekitError(message)
        if self.stages or self.freeze_backbone_epochs or self.freeze_basic_model_epochs:
            for stage in self.stage_configs():
                stage.validate()

    def stage_configs(self) -> list["TrainConfig"]:
        """The run's stages in order, each a whole configuration.

        Without ``stages`` the run is one stage.  ``freeze_*_epochs`` N turns a
        stage into N frozen epochs followed by the rest of its epochs unfrozen.
        """
        for number, stage in enumerate(self.stages, 1):
            unknown = sorted(set(stage) - set(STAGE_FIELDS))
            if unknown:
                raise FacekitError(
                    f"Stage {number} sets {', '.join(unknown)}, which cannot change between "
                    f"stages; set it at the top of the config file. A stage may set: "
                    f"{', '.join(STAGE_FIELDS)}.")
        stages = [dataclasses.replace(self, stages=[], **stage) for stage in self.stages]
        expanded = []
        for stage in stages or [dataclasses.replace(self, stages=[])]:
            frozen_epochs = {"backbone": stage.freeze_backbone_epochs,
                             "basic_model": stage.freeze_basic_model_epochs}
            frozen_epochs = {part: n for part, n in frozen_epochs.items() if n}
            if not frozen_epochs:
                expanded.append(stage)
                continue
            if len(frozen_epochs) > 1:
                raise FacekitError("Give either --freeze-backbone-epochs or "
                                   "--freeze-basic-model-epochs, not both.")
            (part, n), = frozen_epochs.items()
            if n >= stage.epochs:
                raise FacekitError(
                    f"--freeze-{part.replace('_', '-')}-epochs ({n}) must be less than "
                    f"--epochs ({stage.epochs}): the unfrozen epochs follow the frozen ones.")
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
        with them are taken as written, the other options being their defaults."""
        if "stages" in options:
            return dataclasses.replace(self, **options)
        staged = {key: value for key, value in options.items() if key in STAGE_FIELDS}
        stages = [{**stage, **staged} for stage in self.stages]
        return dataclasses.replace(self, **options, stages=stages)

    def augmentation(self):
        from facekit.data.augment import resolve_augmentation

        return resolve_augmentation(
            self.augment, flip=self.flip, brightness=self.brightness, contrast=self.contrast,
            saturation=self.saturation, crop_scale=self.crop_scale, grayscale=self.grayscale)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FacekitError(f"Unknown training option(s): {', '.join(unknown)}; "
                               f"valid ones: {', '.join(sorted(known))}.")
        return cls(**data)


def read_config_file(path: str | Path) -> dict:
    """The options of a run.toml file (dashes in keys allowed, as on the command line)."""
    import tomllib

    path = Path(path)
    if path.is_dir():
        path = path / "config.toml"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FacekitError(f"The config file '{path}' does not exist.") from None
    except tomllib.TOMLDecodeError as exc:
        raise FacekitError(f"The config file '{path}' is not valid TOML: {exc}.") from None
    data = _underscored(data)
    data["stages"] = [_underscored(stage) for stage in data.get("stages", [])]
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
