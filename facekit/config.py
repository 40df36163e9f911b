"""The training configuration: one dataclass shared by the CLI and the Python API."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from facekit.errors import FacekitError

OPTIMIZERS = ("adamax", "adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "exponential", "step")


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
    best_by: str | None = None  # None: val_accuracy with a validation split, else the last
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
        ]
        for ok, message in checks:
            if not ok:
                raise FacekitError(message)

    def augmentation(self):
        from facekit.augment import resolve_augmentation

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
