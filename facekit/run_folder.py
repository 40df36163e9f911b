"""The run folder: every file a run writes, named in one place, and its typed checkpoint state.

A run folder holds what ``facekit train`` made::

    RUN/config.toml            every option the run used, defaults resolved (--config RUN/config.toml)
    RUN/classes.json           the identity of each class id
    RUN/basic_model.keras      the embedding model (the best epoch's, with --best-by)
    RUN/model.keras            the training model (basic model and head) of the last epoch
    RUN/history.csv, .json     one row per epoch; RUN/training.png plots them
    RUN/checkpoints/           epoch-NNNN.keras and state.json, what --resume continues from
    RUN/thresholds.json        similarity thresholds measured by facekit eval
    RUN/eval.json              facekit eval's last report
    RUN/preprocessing.json     how facekit prepare made the training images (when it did)

``state.json`` is read into a :class:`RunState` and written atomically; a damaged
one is a one-sentence error, and its checkpoint name can never point outside the
folder.  Light: no TensorFlow, no Keras.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from facekit.errors import FacekitError
from facekit.files import write_atomic

CONFIG_FILE = "config.toml"
BASIC_MODEL_FILE = "basic_model.keras"
MODEL_FILE = "model.keras"
STATE_FILE = "state.json"
CHECKPOINT_NAME = re.compile(r"epoch-\d{4,}\.keras")


@dataclass(frozen=True)
class Best:
    """The best epoch so far by the run's ``best_by`` figure (0-based epoch)."""

    value: float
    epoch: int


# The options that decide the network a checkpoint holds: a resume must not change them.
ARCHITECTURE = ("backbone", "backbone_options", "neck", "neck_options", "embedding_size",
                "image_size", "embedding_bn")


@dataclass(frozen=True)
class RunState:
    """Where a run stands: its last saved epoch and that epoch's checkpoint.

    Args:
        epoch: epochs completed and saved (1-based count).
        checkpoint: the checkpoint file's name inside ``RUN/checkpoints``.
        stage: the stage that epoch belonged to, for staged runs.
        best: the best epoch so far, when the run picks its basic model by a figure.
        model: what the checkpoints hold (``ARCHITECTURE``'s options and their values),
            so that a resume can refuse a config.toml edited since.
    """

    epoch: int
    checkpoint: str
    stage: int | None = None
    best: Best | None = None
    model: dict | None = None

    def to_dict(self) -> dict:
        data = {"epoch": self.epoch, "checkpoint": self.checkpoint}
        if self.stage is not None:
            data["stage"] = self.stage
        if self.best is not None:
            data["best"] = {"value": self.best.value, "epoch": self.best.epoch}
        if self.model is not None:
            data["model"] = dict(self.model)
        return data

    @classmethod
    def from_dict(cls, data, source: str = "state.json") -> "RunState":
        """A state from its JSON form; anything else is a FacekitError naming ``source``."""
        def bad(what: str) -> FacekitError:
            return FacekitError(f"'{source}' is damaged ({what}); resume from an intact copy "
                                "or start the run again.")

        if not isinstance(data, dict):
            raise bad("not a JSON object")
        epoch, checkpoint = data.get("epoch"), data.get("checkpoint")
        if not _whole(epoch) or epoch < 1:
            raise bad(f"epoch {epoch!r} is not a whole number of at least 1")
        if not isinstance(checkpoint, str) or not CHECKPOINT_NAME.fullmatch(checkpoint):
            raise bad(f"checkpoint {checkpoint!r} is not a file name like epoch-0001.keras")
        stage = data.get("stage")
        if stage is not None and (not _whole(stage) or stage < 1):
            raise bad(f"stage {stage!r} is not a whole number of at least 1")
        best = data.get("best")
        if best is not None:
            if (not isinstance(best, dict) or not _whole(best.get("epoch"))
                    or not isinstance(best.get("value"), (int, float))
                    or isinstance(best.get("value"), bool)):
                raise bad("best is not {value, epoch}")
            best = Best(float(best["value"]), int(best["epoch"]))
        model = data.get("model")
        if model is not None and not (isinstance(model, dict) and all(
                key in ARCHITECTURE and isinstance(value, (str, int, dict, type(None)))
                for key, value in model.items())):
            raise bad("model is not the architecture's options")
        return cls(int(epoch), checkpoint, stage, best, model)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class RunFolder:
    """The files of one run folder (nothing is created until a writer asks).

    Args:
        path: the folder.

    Examples:
        >>> RunFolder("runs/a").basic_model
        PosixPath('runs/a/basic_model.keras')
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    config = property(lambda self: self.path / CONFIG_FILE)
    classes = property(lambda self: self.path / "classes.json")
    basic_model = property(lambda self: self.path / BASIC_MODEL_FILE)
    model = property(lambda self: self.path / MODEL_FILE)
    history_csv = property(lambda self: self.path / "history.csv")
    history_json = property(lambda self: self.path / "history.json")
    training_plot = property(lambda self: self.path / "training.png")
    skipped_files = property(lambda self: self.path / "skipped_files.csv")
    preprocessing = property(lambda self: self.path / "preprocessing.json")
    tensorboard = property(lambda self: self.path / "tensorboard")
    checkpoints = property(lambda self: self.path / "checkpoints")
    state_file = property(lambda self: self.checkpoints / STATE_FILE)

    def worker(self, index: int) -> "RunFolder":
        """The own folder of a cluster's worker ``index`` (not the chief's)."""
        return RunFolder(self.path / "workers" / str(index))

    def checkpoint(self, name_or_epoch: str | int) -> Path:
        """The checkpoint file of an epoch (a number) or by its name in state.json."""
        name = (f"epoch-{name_or_epoch:04d}.keras" if isinstance(name_or_epoch, int)
                else name_or_epoch)
        if not CHECKPOINT_NAME.fullmatch(name):
            raise FacekitError(f"'{name}' is not a checkpoint name (epoch-NNNN.keras).")
        return self.checkpoints / name

    def saved_checkpoints(self) -> list[tuple[int, Path]]:
        """(epoch, file) of every checkpoint in the folder, newest first."""
        found = [(int(path.stem.split("-")[1]), path)
                 for path in self.checkpoints.glob("epoch-*.keras")
                 if CHECKPOINT_NAME.fullmatch(path.name)]
        return sorted(found, reverse=True)

    def read_state(self) -> RunState | None:
        """The saved state, or None when no epoch was saved yet."""
        path = self.state_file
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise FacekitError(f"'{path}' cannot be read ({exc}).") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise FacekitError(f"'{path}' is damaged (not JSON); resume from an intact copy "
                               "or start the run again.") from None
        return RunState.from_dict(data, str(path))

    def write_state(self, state: RunState) -> None:
        """Write state.json through a temporary file, so a reader never sees half of it."""
        write_atomic(self.state_file, json.dumps(state.to_dict(), indent=2) + "\n")

    def is_trained(self) -> bool:
        """Whether the run finished (its final training model was written)."""
        return self.model.is_file()


def model_file(path: str | Path) -> Path:
    """``path`` itself, or the basic model of a run folder."""
    path = Path(path)
    return RunFolder(path).basic_model if path.is_dir() else path


def trained_alignment(model) -> dict | None:
    """How the training images of ``model`` (a run folder or a model file in one) were
    prepared: the ``alignment`` of facekit prepare's record, or None when unknown."""
    path = RunFolder(model_file(model).parent).preprocessing
    try:
        return json.loads(path.read_text())["alignment"]
    except (OSError, ValueError, KeyError, TypeError):
        return None

