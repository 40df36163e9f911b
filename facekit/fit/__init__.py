"""Fitting a planned run: devices and clusters (``devices``, ``distributed``), the
Keras fit loop (``run``), its callbacks, checkpoints, optimizers and BatchNorm
recalibration.  ``facekit.train`` is :func:`train` here; importing this package
is light, so planning still happens before TensorFlow loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facekit.run_folder import RunFolder


@dataclass
class TrainResult:
    """What a run produced: its folder and its per-epoch history."""

    run_dir: Path
    history: dict[str, list[float]]
    interrupted: str | None = None  # the signal that stopped the run early
    stopped: str | None = None  # why the run stopped early: the signal, "NaN loss", ...
    seconds: float = 0.0  # wall time of the epochs (validation and checkpoints included)
    images: int = 0  # training images seen

    @property
    def basic_model_path(self) -> Path:
        return RunFolder(self.run_dir).basic_model

    @property
    def model_path(self) -> Path:
        return RunFolder(self.run_dir).model


def train(config=None, *, resume: str | Path | None = None, callbacks: list | None = None,
          **options) -> TrainResult:
    """Train a face model; ``options`` are TrainConfig fields and override ``config``
    (in every stage too).

    Args:
        config: a ``facekit.TrainConfig`` (default: facekit's defaults), for example
            from a run.toml file (``TrainConfig.from_dict(read_config_file(path))``).
        resume: a run folder to continue from its last checkpoint, with its saved
            configuration; ``options`` may then only raise ``epochs``.
        callbacks: extra Keras callbacks, run after facekit's own in every stage.
        **options: any option of ``facekit train`` by its TOML key (docs/options.md):
            ``data``, ``backbone``, ``loss``, ``epochs``, ``output``, ...

    Returns:
        A :class:`TrainResult`: the run folder, the per-epoch history, whether a
        signal stopped it.

    Examples:
        >>> result = facekit.train(data="faces/", backbone="mobilefacenet",
        ...                        loss="combined", epochs=10, output="runs/mbf")
        >>> facekit.train(resume="runs/mbf", epochs=15)  # five more epochs
    """
    from facekit.plan import plan_run

    plan = plan_run(config, resume=resume, **options)
    from facekit.fit.run import fit

    return fit(plan, callbacks or [])


def _train_signature():
    """train's signature with every TrainConfig field as a keyword, so help(facekit.train)
    and IDEs show the options and their defaults (they are stated once, in TrainConfig)."""
    import dataclasses
    import inspect

    from facekit.config import TrainConfig

    signature = inspect.signature(train)
    named = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    taken = {p.name for p in named}
    for spec in dataclasses.fields(TrainConfig):
        if spec.name in taken:
            continue
        default = (spec.default if spec.default is not dataclasses.MISSING
                   else spec.default_factory())
        named.append(inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY,
                                       default=default, annotation=spec.type))
    return signature.replace(parameters=named)


train.__signature__ = _train_signature()
