"""The ``facekit`` command line: a thin Typer layer over the Python API.

Light commands (``--help``, ``list-plugins``) never import TensorFlow; each
heavy command imports what it needs inside its function.
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from facekit import __version__
from facekit.data.augment import LEVELS
from facekit.config import CLUSTERS, OPTIMIZERS, SCHEDULES, TrainConfig
from facekit.eval.export import FORMATS
from facekit.errors import FacekitError
from facekit.registry import KINDS, get_registry

app = typer.Typer(
    help="Train face-recognition models (ArcFace and friends) with TensorFlow and Keras 3.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)

_DEFAULTS = TrainConfig()
ModelPath = Annotated[Path, typer.Option(
    help="basic_model.keras, a full model.keras, or a run folder.")]


def _choices(name: str, values) -> type[Enum]:
    """A str Enum of ``values`` (member names equal values), so Typer lists the choices."""
    return Enum(name, {value: value for value in values}, type=str)


# The choices come from the modules that own them, so they cannot drift apart.
Kind = _choices("Kind", KINDS)
Pooling = _choices("Pooling", ("gap", "flatten"))
SplitBy = _choices("SplitBy", ("images", "identities"))
AugmentLevel = _choices("AugmentLevel", LEVELS)
Schedule = _choices("Schedule", SCHEDULES)
SchedulePer = _choices("SchedulePer", ("step", "epoch"))
Optimizer = _choices("Optimizer", OPTIMIZERS)
ExportFormat = _choices("ExportFormat", FORMATS)
ClusterKind = _choices("ClusterKind", CLUSTERS)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"facekit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False):
    """Train face-recognition models with TensorFlow and Keras 3."""


@app.command("list-plugins")
def list_plugins(
    kind: Annotated[Optional[Kind], typer.Option(help="Show only this kind.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
):
    """List every backbone, head and loss, with its provider and options."""
    registry = get_registry()
    kinds = [kind.value] if kind else list(KINDS)
    if as_json:
        typer.echo(json.dumps({
            "components": [registry.components[k][n].to_dict()
                           for k in kinds for n in registry.names(k)],
            "problems": [p.to_dict() for p in registry.problems],
            "disabled": registry.disabled}, indent=2, default=str))
        return
    for k in kinds:
        typer.echo(typer.style(f"{k}s".replace("losss", "losses"), bold=True))
        for name in registry.names(k):
            component = registry.components[k][name]
            scores = component.outputs or component.expects
            suffix = f" [{'outputs' if component.outputs else 'expects'} {scores}]" if scores else ""
            typer.echo(f"  {name:<18} {component.summary}{suffix}")
            typer.echo(f"  {'':<18} provider: {component.provider}")
            if component.options:
                opts = ", ".join(f"{key}={value!r}" for key, value in component.options.items())
                typer.echo(f"  {'':<18} options: {opts}")
        typer.echo("")
    if registry.problems:
        typer.echo(typer.style("problems", bold=True, fg="red"))
        for problem in registry.problems:
            typer.echo(f"  {problem.provider}: {problem.error}")
    if registry.disabled:
        typer.echo(f"disabled by FACEKIT_DISABLE_PLUGINS: {', '.join(registry.disabled)}")


@app.command()
def train(
    context: typer.Context,
    data: Annotated[Optional[Path], typer.Option(
        help="Folder of identity sub-folders (DATA/<identity>/<image>). "
             "Default: the built-in demo dataset.")] = None,
    backbone: Annotated[str, typer.Option(help="Backbone name (see list-plugins).")]
        = _DEFAULTS.backbone,
    head: Annotated[str, typer.Option(help="Head name (see list-plugins).")] = _DEFAULTS.head,
    loss: Annotated[str, typer.Option(help="Loss name (see list-plugins).")] = _DEFAULTS.loss,
    backbone_opt: Annotated[list[str], typer.Option(
        "--backbone-opt", help="Backbone option KEY=VALUE, repeatable (e.g. alpha=0.5).")] = [],
    head_opt: Annotated[list[str], typer.Option(
        "--head-opt", help="Head option KEY=VALUE, repeatable.")] = [],
    loss_opt: Annotated[list[str], typer.Option(
        "--loss-opt", help="Loss option KEY=VALUE, repeatable (e.g. scale=32).")] = [],
    image_size: Annotated[int, typer.Option(help="Input images are resized to this square.")]
        = _DEFAULTS.image_size,
    embedding_size: Annotated[int, typer.Option(help="Size of the embedding.")]
        = _DEFAULTS.embedding_size,
    dropout: Annotated[float, typer.Option(help="Dropout before the embedding.")]
        = _DEFAULTS.dropout,
    pooling: Annotated[Pooling, typer.Option(help="Pooling after the backbone.")] = Pooling.gap,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = _DEFAULTS.batch_size,
    epochs: Annotated[Optional[int], typer.Option(
        help=f"Number of epochs. Default: {_DEFAULTS.epochs}, or the resumed run's.")] = None,
    steps_per_epoch: Annotated[Optional[int], typer.Option(
        help="Batches per epoch. Default: one pass over the training images.")] = None,
    val_split: Annotated[float, typer.Option(
        help="Fraction of each identity's images held out for validation.")]
        = _DEFAULTS.val_split,
    optimizer: Annotated[Optimizer, typer.Option(help="Optimizer.")] = Optimizer.adamax,
    lr: Annotated[Optional[float], typer.Option(
        help="Learning rate. Default: the optimizer's own.")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(
        help="Decoupled weight decay of the optimizer.")] = None,
    schedule: Annotated[Schedule, typer.Option(
        help="Learning-rate schedule: constant, cosine (after --warmup-epochs), exponential "
             "(times --decay-rate per epoch) or step (times --decay-rate at each of "
             "--step-epochs).")] = Schedule.constant,
    warmup_epochs: Annotated[float, typer.Option(
        help="Linear warm-up epochs before the cosine decay.")] = 0.0,
    decay_rate: Annotated[float, typer.Option(
        help="Decay factor of the exponential and step schedules.")] = 0.1,
    step_epochs: Annotated[Optional[str], typer.Option(
        help="Epochs where the step schedule decays, e.g. 10,15.")] = None,
    schedule_per: Annotated[SchedulePer, typer.Option(
        help="Change the rate every step, or once per epoch.")] = SchedulePer.step,
    seed: Annotated[int, typer.Option(help="Seed for the split, shuffling and weights.")]
        = _DEFAULTS.seed,
    output: Annotated[Optional[Path], typer.Option(
        help="Run folder. Default: runs/<timestamp>.")] = None,
    split_by: Annotated[SplitBy, typer.Option(
        help="Hold out images of every identity (closed-set classification) or whole "
             "identities (open-set: verification on the held-out people, logged as "
             "eval/val).")] = SplitBy.images,
    augment: Annotated[AugmentLevel, typer.Option(
        help="Augmentation level: none, flip, light (flip, brightness/contrast 0.1, crop "
             "0.9) or strong (also saturation 0.2, crop 0.8, grayscale 0.1). Runs on the "
             "accelerator, never on validation data.")] = AugmentLevel.flip,
    flip: Annotated[Optional[bool], typer.Option(
        help="Random horizontal flips (overrides --augment).")] = None,
    brightness: Annotated[Optional[float], typer.Option(
        help="Random brightness change, as a fraction (overrides --augment).")] = None,
    contrast: Annotated[Optional[float], typer.Option(
        help="Random contrast change, as a fraction (overrides --augment).")] = None,
    saturation: Annotated[Optional[float], typer.Option(
        help="Random saturation change, as a fraction (overrides --augment).")] = None,
    crop_scale: Annotated[Optional[float], typer.Option(
        help="Random crop-and-resize keeping at least this fraction of the side "
             "(overrides --augment).")] = None,
    grayscale: Annotated[Optional[float], typer.Option(
        help="Probability of turning an image gray (overrides --augment).")] = None,
    eval_pairs: Annotated[list[Path], typer.Option(
        "--eval-pairs", help="Verification pairs file (LFW pairs.txt format) to run after "
                             "each epoch; repeatable, one per --eval-data.")] = [],
    eval_data: Annotated[list[Path], typer.Option(
        "--eval-data", help="Image folder of the matching --eval-pairs file.")] = [],
    eval_bin: Annotated[list[Path], typer.Option(
        "--eval-bin", help="insightface verification .bin to run after each epoch; "
                           "repeatable.")] = [],
    best_by: Annotated[Optional[str], typer.Option(
        help="Logged figure that picks basic_model.keras, e.g. val_accuracy or eval/NAME "
             "(NAME: the pairs or .bin file name without extension). Default: val_accuracy "
             "with a validation split, else the last epoch.")] = None,
    resume: Annotated[Optional[Path], typer.Option(
        help="Continue the run in this folder from its last checkpoint, with its saved "
             "configuration (--epochs may raise the total); other options are ignored.")]
        = None,
    tensorboard: Annotated[bool, typer.Option(
        help="Write TensorBoard logs to RUN/tensorboard.")] = False,
    keep_checkpoints: Annotated[int, typer.Option(
        help="Per-epoch checkpoints of the full training state to keep.")]
        = _DEFAULTS.keep_checkpoints,
    mixed_precision: Annotated[bool, typer.Option(
        help="float16 on GPUs (bfloat16 on CPUs), with the embedding and loss in float32.")]
        = False,
    jit_compile: Annotated[Optional[bool], typer.Option(
        help="Compile the train step with XLA. Default: Keras decides.")] = None,
    devices: Annotated[Optional[str], typer.Option(
        help="Devices to train on, e.g. gpu:0,gpu:1 (MirroredStrategy). Default: every "
             "GPU, else the CPU.")] = None,
    deterministic: Annotated[bool, typer.Option(
        help="Deterministic ops and input order, so a run can be repeated exactly "
             "(slower).")] = False,
    bn_recalibration: Annotated[int, typer.Option(
        help="Training batches used to recompute BatchNorm statistics at the end of each "
             "epoch (precise BN), so inference-mode embeddings are right even on short "
             "runs; 0 turns it off.")] = _DEFAULTS.bn_recalibration_batches,
    cluster: Annotated[ClusterKind, typer.Option(
        help="Multi-worker training: auto (when TF_CONFIG lists several workers), slurm "
             "(from the Slurm job) or none. See docs/distributed.md.")] = ClusterKind.auto,
    collective_timeout: Annotated[float, typer.Option(
        help="Seconds a worker waits for the others before it stops with an error.")]
        = _DEFAULTS.collective_timeout,
    init_from: Annotated[Optional[Path], typer.Option(
        help="Start from these basic-model weights: a run folder, a .keras model or a "
             ".weights.h5 file (same backbone and embedding size).")] = None,
    freeze_backbone_epochs: Annotated[int, typer.Option(
        help="Train the first N epochs with the backbone frozen, then unfreeze and go on "
             "(part of --epochs).")] = 0,
    freeze_basic_model_epochs: Annotated[int, typer.Option(
        help="Train the first N epochs with the whole basic model frozen (only the head "
             "learns), then unfreeze and go on (part of --epochs).")] = 0,
    config_file: Annotated[Optional[Path], typer.Option(
        "--config", help="A run.toml file of options, with [[stages]] for staged training; "
                         "options given on the command line override it (in every stage). "
                         "A run folder's config.toml reproduces that run.")] = None,
):
    """Train a model: backbone -> embedding -> head, with the chosen loss."""
    from facekit.config import read_config_file
    from facekit.fit.run import check_config

    given = _given_options(context, {
        "data": str(data) if data else None, "backbone": backbone, "head": head,
        "loss": loss, "backbone_options": backbone_opt, "head_options": head_opt,
        "loss_options": loss_opt, "image_size": image_size, "embedding_size": embedding_size,
        "dropout": dropout, "pooling": pooling.value, "batch_size": batch_size,
        "epochs": epochs, "steps_per_epoch": steps_per_epoch, "val_split": val_split,
        "optimizer": optimizer.value, "lr": lr, "seed": seed,
        "output": str(output) if output else None, "split_by": split_by.value,
        "augment": augment.value, "flip": flip, "brightness": brightness,
        "contrast": contrast, "saturation": saturation, "crop_scale": crop_scale,
        "grayscale": grayscale, "bn_recalibration_batches": bn_recalibration,
        "eval_pairs": [str(p) for p in eval_pairs], "eval_data": [str(d) for d in eval_data],
        "eval_bins": [str(b) for b in eval_bin], "best_by": best_by,
        "keep_checkpoints": keep_checkpoints, "deterministic": deterministic,
        "mixed_precision": mixed_precision, "jit_compile": jit_compile, "devices": devices,
        "weight_decay": weight_decay, "schedule": schedule.value,
        "warmup_epochs": warmup_epochs, "decay_rate": decay_rate,
        "step_epochs": _int_list(step_epochs, "--step-epochs"),
        "schedule_per": schedule_per.value, "tensorboard": tensorboard,
        "init_from": str(init_from) if init_from else None,
        "freeze_backbone_epochs": freeze_backbone_epochs,
        "freeze_basic_model_epochs": freeze_basic_model_epochs, "cluster": cluster.value,
        "collective_timeout": collective_timeout})
    if resume is not None:
        _quiet_tensorflow()
        from facekit.fit.run import train as run_training

        overrides = {} if epochs is None else {"epochs": epochs}
        _exit_if_interrupted(run_training(resume=resume, **overrides))
        return
    base = TrainConfig.from_dict(read_config_file(config_file)) if config_file else TrainConfig()
    config = base.with_overrides(**given)
    check_config(config, get_registry())  # fail fast, before TensorFlow loads
    _quiet_tensorflow()
    from facekit.fit.run import train as run_training

    _exit_if_interrupted(run_training(config))


def _given_options(context: typer.Context, values: dict) -> dict:
    """The options typed on the command line (those override a --config file)."""
    names = {"backbone_opt": "backbone_options", "head_opt": "head_options",
             "loss_opt": "loss_options", "bn_recalibration": "bn_recalibration_batches",
             "eval_bin": "eval_bins"}
    # By name: recent Typer versions carry their own copy of click's ParameterSource.
    given = {names.get(name, name) for name in context.params
             if getattr(context.get_parameter_source(name), "name", None)
             in ("COMMANDLINE", "ENVIRONMENT")}
    return {key: value for key, value in values.items() if key in given}


def _int_list(text: str | None, option: str) -> list[int]:
    if not text:
        return []
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise FacekitError(f"{option} takes whole numbers separated by commas, got "
                           f"'{text}'.") from None


def _exit_if_interrupted(result) -> None:
    if result.interrupted:
        raise typer.Exit(130)


@app.command("eval")
def evaluate(
    model: ModelPath,
    data: Annotated[Optional[Path], typer.Option(
        help="Image folder the pairs refer to (DATA/<name>/<name>_0001.jpg).")] = None,
    pairs: Annotated[Optional[Path], typer.Option(
        help="Pairs file in the LFW pairs.txt format.")] = None,
    auto_pairs: Annotated[Optional[int], typer.Option(
        help="Draw this many balanced same/different pairs from --data (written to "
             "--pairs-out so the result can be reproduced).")] = None,
    bin_file: Annotated[Optional[Path], typer.Option(
        "--bin", help="insightface verification set (lfw.bin, cfp_fp.bin, agedb_30.bin).")]
        = None,
    folds: Annotated[Optional[int], typer.Option(
        help="Number of folds. Default: the pairs file's, 10 for --bin and --auto-pairs.")]
        = None,
    flip: Annotated[bool, typer.Option(
        help="Add the embedding of the mirrored image (insightface's protocol).")] = True,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed for --auto-pairs.")] = 0,
    pairs_out: Annotated[Optional[Path], typer.Option(
        help="Where --auto-pairs writes its pairs. Default: auto_pairs_<N>_seed<S>.txt.")]
        = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    plot: Annotated[Optional[Path], typer.Option(
        help="Write the ROC curve and distance histograms to this PNG.")] = None,
):
    """Face verification accuracy with the standard K-fold protocol."""
    sources = [pairs is not None, auto_pairs is not None, bin_file is not None]
    if sum(sources) != 1 or (bin_file is None) == (data is None):
        raise FacekitError("Give --data with --pairs or --auto-pairs, or --bin alone.")
    if folds is not None and folds < 2:
        raise FacekitError(f"--folds must be at least 2, got {folds}.")
    _quiet_tensorflow()
    from facekit.eval.embedding import load_embedding_model
    from facekit.eval.sets import VerificationSet, evaluate_set
    from facekit.eval.verification import plot_verification

    if bin_file is not None:
        vset = VerificationSet.from_bin(bin_file, folds or 10)
    elif pairs is not None:
        vset = VerificationSet.from_pairs(data, pairs)
    else:
        pairs_out = pairs_out or Path(f"auto_pairs_{auto_pairs}_seed{seed}.txt")
        vset = VerificationSet.auto(data, auto_pairs, folds or 10, seed, pairs_out)
        if not as_json:
            typer.echo(f"pairs written to {pairs_out}")
    embedding_model = load_embedding_model(model)
    result, distances = evaluate_set(embedding_model, vset, flip=flip, batch_size=batch_size,
                                     folds=folds, progress=not as_json)
    if plot:
        plot_verification(distances, vset.issame, result, plot)
    if as_json:
        typer.echo(json.dumps({"set": vset.name, **result.to_dict()}, indent=2))
    else:
        typer.echo(f"\n{vset.name}\n{result.summary()}")
        if plot:
            typer.echo(f"plot: {plot}")


@app.command()
def embed(
    model: ModelPath,
    data: Annotated[Path, typer.Option(help="Folder of identity sub-folders.")],
    out: Annotated[Path, typer.Option(
        help="Output: FILE.parquet, or FILE.npy (with FILE.csv for paths and identities).")],
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 64,
    flip: Annotated[bool, typer.Option(help="Add the mirrored image's embedding.")] = True,
    normalize: Annotated[bool, typer.Option(help="L2-normalize the embeddings.")] = True,
):
    """Embeddings of every image of a folder, with paths and identities."""
    if out.suffix not in (".npy", ".parquet"):
        raise FacekitError(f"--out must end in .npy or .parquet, got '{out}'.")
    _quiet_tensorflow()
    import pandas as pd

    from facekit.data.index import load_index
    from facekit.eval.embedding import embed_paths, load_embedding_model
    from facekit.eval.verification import l2_normalize

    index = load_index(data)
    embedding_model = load_embedding_model(model)
    vectors = embed_paths(embedding_model, index.paths, batch_size=batch_size, flip=flip,
                          progress=True)
    if normalize:
        vectors = l2_normalize(vectors)
    table = pd.DataFrame({"path": index.paths,
                          "identity": [index.classes[i] for i in index.labels]})
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np_path, csv_path = out, out.with_suffix(".csv")
        import numpy as np

        np.save(np_path, vectors.astype("float32"))
        table.to_csv(csv_path, index=False)
        typer.echo(f"Wrote {len(vectors)} embeddings to {np_path} and {csv_path}")
    else:
        table["embedding"] = list(vectors.astype("float32"))
        table.to_parquet(out, index=False)
        typer.echo(f"Wrote {len(vectors)} embeddings to {out}")


@app.command()
def export(
    model: ModelPath,
    format: Annotated[ExportFormat, typer.Option(help="Deployment format.")],
    out: Annotated[Path, typer.Option(help="Output folder (savedmodel) or file.")],
):
    """Export the embedding model (raw [0, 255] RGB images in, embeddings out)."""
    _quiet_tensorflow()
    from facekit.eval.export import export_model

    export_model(model, format.value, out)
    typer.echo(f"Exported {format.value} to {out}")


@app.command()
def prepare(
    source: Annotated[Path, typer.Argument(help="Folder of identity sub-folders, any format.")],
    destination: Annotated[Path, typer.Argument(help="Where to write DST/<identity>/*.jpg.")],
    size: Annotated[int, typer.Option(help="Output size in pixels (square).")] = 112,
    crop: Annotated[Optional[int], typer.Option(
        help="Center-crop a square of this many source pixels first (e.g. 150 for aligned "
             "250x250 LFW images).")] = None,
    workers: Annotated[Optional[int], typer.Option(
        help="Parallel processes. Default: one per CPU.")] = None,
):
    """Convert a dataset to 112x112 RGB JPEGs in identity folders (file stems kept)."""
    from facekit.data.prepare import prepare_dataset

    report = prepare_dataset(source, destination, size, crop, workers)
    typer.echo(f"Wrote {report.written} images of {report.identities} identities to "
               f"{destination}; skipped {len(report.skipped)}.")
    for path, reason in report.skipped:
        typer.echo(f"  skipped {path}: {reason}")


@app.command()
def index(
    data: Annotated[Path, typer.Argument(help="Folder of identity sub-folders.")],
    verify: Annotated[bool, typer.Option(
        help="Decode every image as training will, to find corrupt files.")] = True,
    rebuild: Annotated[bool, typer.Option(help="Ignore a cached index.")] = False,
):
    """Build (or load) the cached index of a data folder and summarize it."""
    if verify:
        _quiet_tensorflow()
    from facekit.data.index import load_index

    dataset_index = load_index(data, use_cache=not rebuild, verify=verify)
    typer.echo(dataset_index.summary(listed=50))


@app.command()
def pack(
    data: Annotated[Path, typer.Argument(help="Folder of identity sub-folders.")],
    out: Annotated[Path, typer.Argument(help="Folder for the TFRecord shards.")],
    images_per_shard: Annotated[int, typer.Option(help="Images in each shard.")] = 5000,
    image_size: Annotated[int, typer.Option(help="Images are stored at this size.")] = 112,
    seed: Annotated[int, typer.Option(help="Seed of the shuffled record order.")] = 0,
):
    """Pack a data folder into TFRecord shards (train with --data OUT)."""
    if images_per_shard < 1:
        raise FacekitError(f"--images-per-shard must be at least 1, got {images_per_shard}.")
    _quiet_tensorflow()
    from facekit.data.index import load_index
    from facekit.data.shards import pack as pack_shards

    dataset_index = load_index(data)
    meta = pack_shards(dataset_index, out, images_per_shard=images_per_shard,
                       image_size=image_size, seed=seed)
    typer.echo(f"\nPacked {meta['images']} images of {len(meta['classes'])} identities into "
               f"{len(meta['shards'])} shard(s) in {out}")


@app.command("demo-data")
def demo_data(
    folder: Annotated[Path, typer.Argument(help="Where to write the dataset.")],
    identities: Annotated[int, typer.Option(help="Number of identities.")] = 20,
    images: Annotated[int, typer.Option(help="Images per identity.")] = 30,
    size: Annotated[int, typer.Option(help="Image size in pixels.")] = 112,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same images.")] = 0,
):
    """Write the built-in synthetic face dataset to FOLDER/<identity>/<n>.jpg."""
    from facekit.data.demo import write_demo_dataset

    write_demo_dataset(folder, identities, images, size, seed)
    typer.echo(f"Wrote {identities} identities x {images} images to {folder}")


def _quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ start-up chatter unless the user asked for it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    """Console entry point: user mistakes become one line on stderr and exit code 2."""
    try:
        app()
    except FacekitError as exc:
        typer.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        sys.exit(130)
