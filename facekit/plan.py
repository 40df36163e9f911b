"""Planning a run: a configuration resolved once, before TensorFlow is imported.

``plan_run`` checks every option, looks up the components and types their
options, lays out the stages, opens the data source, reads the verification
sets, finds the cluster and picks the run folder.  Everything downstream
(facekit.fit) takes the resulting :class:`RunPlan`; nothing is looked up or
checked a second time.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path

from facekit.cluster import find_cluster
from facekit.components import Resolved, parse_options, resolve, resolve_neck
from facekit.config import DEFAULT_HEADS, DEFAULT_LR, TrainConfig, read_config_file
from facekit.data.demo import demo_dataset_dir
from facekit.data.sources import open_source
from facekit.errors import FacekitError, OptionError
from facekit.eval.protocols import Pairs
from facekit.registry import Registry, get_registry
from facekit.run_folder import ARCHITECTURE, RunFolder, RunState

# What ``--resume`` may change: the run's total epochs, and how much it prints.
RESUMABLE = ("epochs", "verbose")  # the total may rise; how much it prints is free



@dataclass(frozen=True)
class StagePlan:
    """One stage of a run: its whole configuration, its head and loss, its epochs."""

    number: int
    config: TrainConfig
    head: Resolved
    loss: Resolved
    first_epoch: int  # epochs of the run before this stage
    keeps_head: bool  # the previous stage's head weights carry over (same head and options)

    @property
    def end_epoch(self) -> int:
        return self.first_epoch + self.config.epochs


@dataclass
class RunPlan:
    """Everything a run needs, resolved: what ``facekit.fit`` trains."""

    config: TrainConfig  # checked, with plugin options typed: what the run records
    backbone: Resolved
    neck: Resolved
    stages: list[StagePlan]
    augmentation: object  # a facekit.data.augment.Augmentation
    source: object  # a facekit.data.sources.DataSource, opened but not loaded
    eval_sets: list  # evaluation protocols named by the options (facekit.eval.protocols)
    cluster: object  # a facekit.fit.distributed.Cluster, or None to train alone
    run_dir: Path
    resume: RunState | None = None  # the checkpoint state a resumed run continues from
    inherited: dict = dataclasses.field(default_factory=dict)  # from the --init-from run
    teacher: Path | None = None  # the --teacher model's file, resolved once

    @property
    def run(self) -> RunFolder:
        return RunFolder(self.run_dir)

    @property
    def total_epochs(self) -> int:
        return self.stages[-1].end_epoch

    def describe_stages(self) -> str:
        lines = [f"{len(self.stages)} stages:"]
        for stage in self.stages:
            c = stage.config
            frozen = "" if c.frozen == "none" else f", {c.frozen} frozen"
            lines.append(f"  {stage.number}. epochs {stage.first_epoch + 1}-{stage.end_epoch}: "
                         f"{c.head} head, {c.loss} loss, {c.optimizer}{frozen}")
        return "\n".join(lines)


def plan_run(config: TrainConfig | None = None, *, resume: str | Path | None = None,
             registry: Registry | None = None, **options) -> RunPlan:
    """Resolve a configuration (``options`` override it, in every stage too), or the
    saved one of the run folder ``resume``, into a RunPlan.

    Every default that follows a rule (the learning rate of the optimizer, the head a
    loss takes, the augmentation a level stands for, the neck a backbone names) is made
    explicit in ``RunPlan.config``, which the run writes to ``RUN/config.toml``: so
    ``--config RUN/config.toml`` repeats the run even after facekit's defaults change.

    Args:
        config: the configuration (default: ``TrainConfig()``, facekit's defaults).
        resume: a run folder to continue; ``options`` may then only raise ``epochs``.
        registry: the components to choose from (default: the installed plugins).
        **options: ``TrainConfig`` fields that override ``config``, in every stage too.

    Returns:
        The RunPlan that ``facekit.fit.run.fit`` trains.  Nothing is written and
        TensorFlow is not imported (but for a pretrained model's first use as
        ``init_from``, which makes its cached run folder).

    Examples:
        >>> plan = plan_run(data="faces/", loss="cosface")
        >>> plan.config.head, plan.config.lr
        ('normdense', 0.005)
    """
    state = None
    if resume is not None:
        config, state = _resume_config(Path(resume), options)
    else:
        config = (config or TrainConfig()).with_overrides(**options)
    inherited = {}
    if resume is None and config.init_from:
        config, inherited = _network_of_init_source(config, options)
    if config.teacher and not config.no_labels and config.data and _unlabelled_folder(
            config.data):  # images without identity folders: the teacher alone teaches
        config = dataclasses.replace(config, no_labels=True)
    config = config.checked()
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise FacekitError("--tensorboard needs the tensorboard package (TensorFlow no longer "
                           "ships it): pip install 'facekit[tensorboard]'.")
    registry = registry or get_registry()
    config = with_rules(config, registry)
    backbone = resolve(registry, "backbone", config.backbone, config.backbone_options)
    neck = resolve_neck(registry, backbone, config.neck, config.neck_options)
    config = dataclasses.replace(config, neck=neck.name)  # the run records the neck it uses
    stages, previous = [], None
    for number, stage_config in enumerate(config.stage_configs(), 1):
        head, loss = _head_and_loss(registry, stage_config)
        stage_config = dataclasses.replace(
            stage_config, neck=neck.name, head=head.name, backbone_options=backbone.options,
            neck_options=neck.options, head_options=head.options, loss_options=loss.options)
        keeps_head = (previous is not None and previous.head.component == head.component
                      and previous.head.options == head.options)
        stages.append(StagePlan(number, stage_config, head, loss,
                                previous.end_epoch if previous else 0, keeps_head))
        previous = stages[-1]
    typed = {}
    if not config.stages:  # with stages, the top-level head and loss are only what stages
        typed = {"head_options": stages[-1].head.options,  # inherit, checked in each above
                 "loss_options": stages[-1].loss.options}
    config = dataclasses.replace(config, backbone_options=backbone.options,
                                 neck_options=neck.options, **typed)
    cluster = find_cluster(config.cluster)
    if cluster is not None and config.devices not in (None, "", "auto"):
        raise OptionError("{devices} chooses devices on one machine; a multi-worker run uses "
                          "every local GPU (choose them with CUDA_VISIBLE_DEVICES).")
    data = config.data or demo_dataset_dir()
    teacher = _teacher_file(config.teacher) if config.teacher else None
    source = open_source(data, val_split=config.val_split, split_by=config.split_by,
                         seed=config.seed, class_balance=config.class_balance,
                         labelled=not config.no_labels)
    return RunPlan(config, backbone, neck, stages, config.augmentation(), source,
                   load_eval_sets(config), cluster,
                   Path(resume) if resume is not None else _run_dir(config.output), state,
                   inherited, teacher)


def _network_of_init_source(config: TrainConfig, options: dict) -> tuple[TrainConfig, dict]:
    """``config`` with the network options (``ARCHITECTURE``) of the run ``--init-from``
    names, for each one left at its default: its weights fit only that network."""
    from facekit.model.pretrained import resolve_model

    source = resolve_model(config.init_from)  # a pretrained model's name: its cached run
    run = RunFolder(source if source.is_dir() else source.parent)
    if not run.config.is_file():
        return config, {}
    try:
        saved = TrainConfig.from_dict(read_config_file(run.config))
    except FacekitError:
        return config, {}  # the weights themselves are checked when they load
    defaults = TrainConfig()
    inherited = {name: getattr(saved, name) for name in ARCHITECTURE
                 if name not in options and getattr(config, name) == getattr(defaults, name)
                 and getattr(saved, name) != getattr(config, name)}
    return dataclasses.replace(config, **inherited), inherited


def _teacher_file(teacher: str) -> Path:
    """The model file ``--teacher`` names (a pretrained model's name or an importable file
    becomes its cached run folder here); one sentence when it names no model."""
    from facekit.model.pretrained import resolve_model
    from facekit.run_folder import model_file

    path = model_file(resolve_model(teacher))
    if not path.is_file():
        raise OptionError("{teacher} '{name}' is not a model; pass a run folder, a .keras "
                          "model, dlib, or a file facekit import reads.", name=teacher)
    return path


def _unlabelled_folder(data) -> bool:
    from facekit.data.index import holds_only_images, is_pattern

    path = Path(data)
    return not is_pattern(path) and path.is_dir() and holds_only_images(path)


def with_rules(config: TrainConfig, registry: Registry) -> TrainConfig:
    """``config`` with every default-by-rule written out, at the top and in each stage:
    the optimizer's learning rate, the head its loss takes, the augmentation its level
    stands for."""
    def explicit(c: TrainConfig) -> dict:
        filled = {}
        if c.lr is None:
            filled["lr"] = DEFAULT_LR[c.optimizer]
        if c.head is None:
            filled["head"] = DEFAULT_HEADS[registry.get("loss", c.loss).expects]
        return filled

    stages = [{**stage, **explicit(dataclasses.replace(config, stages=[], **stage))}
              for stage in config.stages]
    augmentation = dataclasses.asdict(config.augmentation())
    return dataclasses.replace(config, **explicit(config), **augmentation, stages=stages)


def _head_and_loss(registry: Registry, config: TrainConfig) -> tuple[Resolved, Resolved]:
    loss = registry.get("loss", config.loss)
    head = registry.get("head", config.head or DEFAULT_HEADS[loss.expects])
    if loss.expects not in head.outputs:
        fitting = [name for name in registry.names("head")
                   if loss.expects in registry.components["head"][name].outputs]
        choice = " or {head} ".join(fitting) or "<a {expects} head>"
        losses = [name for name in registry.names("loss")
                  if registry.components["loss"][name].expects in head.outputs]
        if config.head and config.loss == TrainConfig.loss and losses:
            # A head chosen with the loss left to its default: the loss is what to change.
            shown = ", ".join(losses[:6]) + (", …" if len(losses) > 6 else "")
            raise OptionError("The head '{name}' outputs {outputs} and the default loss "
                              "'{loss_name}' expects {expects}; choose a loss for this head "
                              "with {loss} ({losses}), or use {head} " + choice + ".",
                              name=head.name, outputs=" or ".join(head.outputs),
                              loss_name=loss.name, expects=loss.expects, losses=shown)
        raise OptionError("The head '{name}' outputs {outputs} but the loss '{loss_name}' "
                          f"expects {{expects}}; use {{head}} {choice} with this loss.",
                          name=head.name, outputs=" or ".join(head.outputs),
                          loss_name=loss.name, expects=loss.expects)
    extra = {"append_norm": True} if loss.expects == "cosine+norm" else {}
    return (Resolved(head, parse_options(head, config.head_options), extra),
            Resolved(loss, parse_options(loss, config.loss_options)))


def _resume_config(run_dir: Path, options: dict) -> tuple[TrainConfig, RunState]:
    run = RunFolder(run_dir)
    if not run.config.is_file():
        raise FacekitError(f"'{run_dir}' is not a facekit run folder (no {run.config.name}).")
    state = run.read_state()
    if state is None:
        raise FacekitError(f"'{run_dir}' has no checkpoint yet (no epoch finished); start "
                           "the run again instead of resuming it.")
    if not run.checkpoint(state.checkpoint).is_file():
        raise FacekitError(f"'{run.state_file}' names the checkpoint {state.checkpoint}, "
                           f"which is not in {run.checkpoints}.")
    refused = sorted(set(options) - set(RESUMABLE))
    if refused:
        raise OptionError("{%s} cannot change when a run resumes: it continues with the "
                          "options in {file} (only {epochs} may raise its total); start a "
                          "new run to change it." % refused[0], file=run.config)
    saved = TrainConfig.from_dict(read_config_file(run.config))
    if saved.stages and "epochs" in options:
        raise OptionError("{epochs} cannot change a run with stages on resume; each stage "
                          "keeps its epochs (see {file}).", file=run.config)
    edited = [name for name, value in (state.model or {}).items()
              if json.loads(json.dumps(getattr(saved, name))) != value]
    if edited:
        raise FacekitError(
            f"'{run.config}' says {edited[0]} = {getattr(saved, edited[0])!r}, but the run's "
            f"checkpoints hold a network with {edited[0]} = {state.model[edited[0]]!r}; "
            "restore the file, or start a new run to train another network.")
    config = saved.with_overrides(**options, output=str(run_dir))
    if state.epoch > config.total_epochs or (state.epoch == config.total_epochs
                                             and run.is_trained()):
        raise OptionError("'{run}' has already trained {done} epoch(s); pass {epochs} with "
                          "more than {done} to continue.", run=run_dir, done=state.epoch)
    return config, state


def load_eval_sets(config: TrainConfig) -> list:
    """The evaluation protocols to run after each epoch (their files read before training
    starts)."""
    sets = [Pairs.from_pairs(data, pairs)
            for pairs, data in zip(config.eval_pairs, config.eval_data)]
    sets += [Pairs.from_bin(path) for path in config.eval_bins]
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise FacekitError(f"Two verification sets share a name ({', '.join(names)}); "
                           "rename one of the files.")
    return sets


def _run_dir(output: str | None) -> Path:
    """The new run's folder (created when training starts)."""
    run_dir = Path(output) if output else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    if run_dir.exists() and not run_dir.is_dir():
        raise OptionError("{output} '{path}' is a file; pass a folder (it is created if "
                          "missing).", path=run_dir)
    if run_dir.is_dir() and any(run_dir.iterdir()):  # nothing there is overwritten
        what = ("a trained model" if RunFolder(run_dir).is_trained() else
                "a run (continue it with --resume)" if RunFolder(run_dir).config.exists()
                else "files")
        raise OptionError("The run folder '{path}' already holds {what}; facekit trains only "
                          "into a new or empty folder: pass another {output} folder.",
                          path=run_dir, what=what)
    return run_dir
