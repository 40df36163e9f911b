"""Real-data check: train on LFW identities outside the pairs, verify on the pairs.

Prepares ../shared/data/lfw_a_subset (250x250 aligned grayscale) into 112x112
RGB with a centre crop, trains on every identity that no line of
lfw_a_subset_pairs.txt names, and evaluates on those pairs (3 folds, as the
file says) next to two baselines computed the same way (flip-summed,
L2-normalized, squared distance, K-fold thresholds): raw pixels, and the
first recipe's network untrained.

    python benchmarks/lfw_subset.py --recipes default,keras-insightface [--work DIR]
    python benchmarks/lfw_subset.py --recipes default --set epochs=10 --set neck=gdc
    python benchmarks/lfw_subset.py --prepare crop,detect   # centre crop vs detected

``--prepare detect`` prepares the subset as ``facekit prepare --detect`` does (mtcnn,
aligned to the ArcFace template) and prints the detection rate and speed; a pair
image without a face falls back to its centre crop, counted in the table's title.

A recipe is a run.toml file of ``facekit.train`` options in ``recipes/`` (the same
files ``facekit train --config recipes/NAME.toml`` runs); ``default`` is facekit's
defaults, untouched, so its row is what ``facekit train --data DIR``
gives.  ``--set KEY=VALUE`` (TOML values) overrides every recipe; ``--losses
a,b,c`` trains one recipe per loss (normdense head; softmax with its own head).
One table compares them: accuracy ± std over the folds, AUC, TAR at the lowest
FAR the pairs allow, epochs and training minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

# The measured recipes: facekit train --config recipes/NAME.toml runs each as it is here.
RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"
RECIPES = sorted(path.stem for path in RECIPES_DIR.glob("*.toml"))

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "lfw_a_subset")
    parser.add_argument("--pairs", type=Path, default=SHARED / "lfw_a_subset_pairs.txt")
    parser.add_argument("--work", type=Path, default=None, help="Working folder (kept).")
    parser.add_argument("--recipes", default="default",
                        help=f"Comma-separated recipes: {', '.join(RECIPES)}.")
    parser.add_argument("--losses", default=None,
                        help="Comma-separated losses: the first recipe once per loss.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="A facekit.train option for every recipe (TOML value).")
    parser.add_argument("--crop", type=int, default=150)
    parser.add_argument("--prepare", default="crop",
                        help="Comma-separated: crop (centre crop, --crop) and/or detect "
                             "(facekit prepare --detect: mtcnn, 5-point alignment).")
    args = parser.parse_args()
    if not args.data.is_dir() or not args.pairs.is_file():
        print(f"LFW subset not found at {args.data}; nothing to do.")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = args.work or Path(tempfile.mkdtemp(prefix="facekit-lfw-"))

    from facekit.config import read_config_file
    from facekit.data.prepare import prepare_dataset
    from facekit.eval.pairs import read_pairs

    overrides = {key.strip(): _toml_value(value) for key, value in
                 (item.split("=", 1) for item in args.set)}
    for name in args.recipes.split(","):
        if name not in RECIPES:
            parser.error(f"unknown recipe {name!r}; recipes/ holds: {', '.join(RECIPES)}")
    recipes = [(name, {**read_config_file(RECIPES_DIR / f"{name}.toml"), **overrides})
               for name in args.recipes.split(",")]
    if args.losses:
        name, options = recipes[0]
        recipes = [(f"{name}/{loss}", {**options, "loss": loss,
                                       "head": "softmax" if loss == "softmax" else "normdense"})
                   for loss in args.losses.split(",")]
    in_pairs = {name for a, _, b, _ in read_pairs(args.pairs).pairs for name in (a, b)}
    # The centre crop is always prepared: it is the first table's data, and the
    # fallback for a pair image in which the detector finds no face.
    cropped = work / "lfw112"
    if not cropped.is_dir():
        report = prepare_dataset(args.data, cropped, size=112, crop=args.crop)
        print(f"centre crop: prepared {report.written} images, skipped {len(report.skipped)}")
    tables = []
    for preparation in args.prepare.split(","):
        if preparation == "crop":
            prepared, evaluated, note = cropped, cropped, f"centre crop of {args.crop} pixels"
        elif preparation == "detect":
            prepared, evaluated, note = detected(args.data, work, cropped, in_pairs)
        else:
            parser.error(f"unknown preparation {preparation!r}; choose crop or detect")
        tables.append(measure(preparation, note, prepared, evaluated, work, in_pairs, args,
                              recipes))
    for table in tables:
        print(table)
    for name, options in recipes:
        print(f"  {name}: {options or 'facekit defaults'}")
    return 0


def detected(data: Path, work: Path, cropped: Path, in_pairs: set):
    """The subset prepared with --detect, and its pair identities for evaluation: a pair
    image without a detected face falls back to its centre crop (counted)."""
    from facekit.data.detect import FaceFinder
    from facekit.data.prepare import prepare_dataset

    prepared = work / "lfw112-detect"
    started = time.perf_counter()
    report = prepare_dataset(data, prepared, size=112, detect=FaceFinder())
    seconds = time.perf_counter() - started
    total = report.written + report.already_done + len(report.skipped)
    found = report.written + report.already_done
    print(f"detect: faces found in {found} of {total} images ({found / total:.2%}), "
          f"{report.written / max(seconds, 1e-9):.1f} images/s this run")
    for path, reason in report.skipped:
        print(f"  no face: {path}: {reason}")
    evaluated = work / "eval-detect"
    fallbacks = 0
    for identity in sorted(in_pairs):
        (evaluated / identity).mkdir(parents=True, exist_ok=True)
        for image in sorted(os.listdir(cropped / identity)):
            link = evaluated / identity / image
            face = prepared / identity / image
            if not face.is_file():
                fallbacks += 1
            if not link.exists():
                link.symlink_to(face if face.is_file() else cropped / identity / image)
    note = (f"detected and aligned (mtcnn, ArcFace template); {fallbacks} image(s) of the "
            "pair identities without a face use their centre crop")
    return prepared, evaluated, note


def measure(preparation, note, prepared, evaluated, work, in_pairs, args, recipes) -> str:
    """Train each recipe on the non-pair identities of ``prepared`` and verify the pairs
    on ``evaluated``, with the baselines; returns the table."""
    import facekit
    from facekit.config import TrainConfig, read_config_file
    from facekit.eval.sets import VerificationSet, evaluate_set
    from facekit.model.build import build_model

    train_dir = work / f"train-{preparation}"
    train_dir.mkdir(exist_ok=True)
    for identity in sorted(os.listdir(prepared)):
        if (prepared / identity).is_dir() and identity not in in_pairs \
                and len(os.listdir(prepared / identity)) >= 2:
            link = train_dir / identity
            if not link.exists():
                link.symlink_to((prepared / identity).resolve(), target_is_directory=True)
    identities = sorted(os.listdir(train_dir))
    assert not set(identities) & in_pairs  # never train on a pair identity
    images = sum(len(os.listdir(train_dir / i)) for i in identities)
    print(f"{preparation}: training on {images} images of {len(identities)} identities "
          f"(excluded {len(in_pairs)} pair identities)")
    vset = VerificationSet.from_pairs(evaluated, args.pairs)
    rows = []
    for name, options in recipes:
        started = time.perf_counter()
        result = facekit.train(data=str(train_dir), verbose=2, **options,
                               output=str(work / f"run-{preparation}-{name.replace('/', '-')}"
                                                 f"-{int(time.time())}"))
        seconds = time.perf_counter() - started
        trained, _ = evaluate_set(facekit.load_model(result.basic_model_path), vset)
        config = TrainConfig.from_dict(read_config_file(result.run_dir))
        rows.append((name, trained, config.total_epochs, seconds))
        print(f"{preparation} {name}: {trained.accuracy:.4f} ± {trained.accuracy_std:.4f}",
              flush=True)
    untrained_model, _ = build_model(
        len(identities), config.backbone, "normdense", neck=config.neck,
        embedding_bn=config.embedding_bn, backbone_options=config.backbone_options,
        neck_options=config.neck_options, embedding_size=config.embedding_size)
    untrained, _ = evaluate_set(untrained_model, vset)
    rows += [("untrained network", untrained, None, None),
             ("raw pixels", raw_pixel_result(vset), None, None)]
    lowest = min(rows[0][1].tar_at_far, key=float)
    lines = [f"\nLFW subset, {note}: {len(vset.issame)} pairs, {vset.folds} folds; trained "
             f"on {images} images of {len(identities)} other identities",
             f"{'':<30}{'accuracy':>18}{'AUC':>8}{'TAR@FAR=' + lowest:>16}{'epochs':>8}"
             f"{'train min':>11}"]
    for name, res, epochs, seconds in rows:
        minutes = "" if seconds is None else f"{seconds / 60:.1f}"
        lines.append(f"{name:<30}{res.accuracy:>10.4f} ± {res.accuracy_std:.4f}{res.auc:>8.4f}"
                     f"{res.tar_at_far[lowest]['tar']:>16.4f}{epochs or '':>8}{minutes:>11}")
    return "\n".join(lines)


def _toml_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def raw_pixel_result(vset):
    """The protocol on flattened pixels: flip-summed, L2-normalized."""
    from facekit.data.pipeline import make_dataset
    from facekit.data.index import DatasetIndex
    from facekit.eval.verification import evaluate_embeddings

    index = DatasetIndex(np.asarray(vset.images), np.zeros(len(vset.images), np.int32), [])
    batches = make_dataset(index, image_size=112, batch_size=256, training=False,
                           skip_unreadable=False)
    vectors = np.concatenate([
        (images.numpy().astype(np.float32) + images.numpy()[:, :, ::-1].astype(np.float32))
        .reshape(len(images), -1) for images, _ in batches])
    return evaluate_embeddings(vectors[vset.first], vectors[vset.second], vset.issame,
                               vset.folds)


if __name__ == "__main__":
    sys.exit(main())
