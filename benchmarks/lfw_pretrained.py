"""dlib's public-domain face model on the LFW subset: zero-shot, fine-tuned, and
against dlib's own pipeline, with the raw-pixel and untrained baselines.

    python benchmarks/lfw_pretrained.py [--work DIR] [--recipe recipes/finetune-dlib.toml]

Rows (1,800 pairs, 3 folds, flip-summed embeddings, mean ± std over folds):

- facekit, zero-shot: ``facekit import dlib``, faces detected by mtcnn and aligned
  to dlib's chip (``--detect``; a pair image without a face is embedded whole);
- fine-tuned: ``facekit train --config RECIPE --data TRAIN`` where TRAIN is the
  subset's identities that no pair names (prepared with ``facekit prepare --detect
  --template dlib --size 150``), evaluated the same way;
- dlib's own pipeline (when ``import dlib`` works): its HOG detector, 5-point shape
  predictor and ``get_face_chip`` (150, padding 0.25), the descriptor of the chip
  and of its mirror image summed; a pair image without a face is its centre 150x150;
- the same network untrained (dlib-resnet, random weights) and raw pixels of the
  facekit chips.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "lfw_a_subset")
    parser.add_argument("--pairs", type=Path, default=SHARED / "lfw_a_subset_pairs.txt")
    parser.add_argument("--work", type=Path, default=None, help="Working folder (kept).")
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "finetune-dlib.toml")
    parser.add_argument("--seed", type=int, default=0, help="The fine-tuning run's seed.")
    args = parser.parse_args()
    if not args.data.is_dir() or not args.pairs.is_file():
        print(f"LFW subset not found at {args.data}; nothing to do.")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = args.work or Path(tempfile.mkdtemp(prefix="facekit-pretrained-"))
    work.mkdir(parents=True, exist_ok=True)

    import facekit
    from facekit.config import read_config_file
    from facekit.data.detect import FaceFinder
    from facekit.eval.pairs import read_pairs
    from facekit.eval.sets import VerificationSet, embed_set, verify_set
    from facekit.model.pretrained import import_model

    imported = work / "dlib"
    if not imported.is_dir():
        import_model("dlib", imported)
    vset = VerificationSet.from_pairs(args.data, args.pairs)
    finder = FaceFinder(template="dlib")
    rows = []

    def facekit_row(name, model, seconds=None):
        embeddings, faceless = embed_set(model, vset, faces=finder)
        result, _ = verify_set(embeddings, vset)
        rows.append((name, result, seconds, len(faceless)))
        print(f"{name}: {result.accuracy:.4f} ± {result.accuracy_std:.4f}", flush=True)
        return embeddings

    facekit_row("facekit: dlib, zero-shot", facekit.load_model(imported))

    in_pairs = {name for a, _, b, _ in read_pairs(args.pairs).pairs for name in (a, b)}
    train = _training_chips(args.data, work, in_pairs)
    options = {**read_config_file(args.recipe), "seed": args.seed}
    started = time.perf_counter()
    result = facekit.train(data=str(train), output=str(work / f"finetune-{int(time.time())}"),
                           verbose=2, **options)
    seconds = time.perf_counter() - started
    facekit_row(f"facekit: dlib, fine-tuned ({args.recipe.stem}, seed {args.seed})",
                facekit.load_model(result.basic_model_path), seconds)

    if _dlib_importable():
        rows.append(("dlib's own pipeline", *_dlib_pipeline(vset)))
        print(f"{rows[-1][0]}: {rows[-1][1].accuracy:.4f} ± {rows[-1][1].accuracy_std:.4f}")
    untrained, _ = facekit.build_model(2, "dlib-resnet", "softmax", neck="gap",
                                       image_size=150, embedding_size=128, dropout=0.0,
                                       embedding_bn=False, neck_options={"use_bias": False})
    facekit_row("untrained dlib-resnet", untrained)
    rows.append(("raw pixels (facekit's dlib chips)", _raw_pixels(vset, finder), None, None))

    identities = [path for path in train.iterdir() if path.is_dir()]
    print(f"\nLFW subset: {len(vset.issame)} pairs, {vset.folds} folds; fine-tuned on "
          f"{sum(len(os.listdir(i)) for i in identities)} images of {len(identities)} "
          "identities no pair names")
    print(f"{'':<52}{'accuracy':>18}{'AUC':>8}{'train min':>11}{'no face':>9}")
    for name, res, seconds, faceless in rows:
        minutes = "" if seconds is None else f"{seconds / 60:.1f}"
        print(f"{name:<52}{res.accuracy:>10.4f} ± {res.accuracy_std:.4f}{res.auc:>8.4f}"
              f"{minutes:>11}{'' if faceless is None else faceless:>9}")
    print(f"recipe {args.recipe}: {options}")
    return 0


def _training_chips(data: Path, work: Path, in_pairs: set) -> Path:
    """The subset's identities that no pair names (two images or more), prepared as
    ``facekit prepare --detect --template dlib --size 150`` does."""
    from facekit.data.detect import FaceFinder
    from facekit.data.prepare import prepare_dataset

    source = work / "train-source"
    source.mkdir(exist_ok=True)
    for identity in sorted(os.listdir(data)):
        if identity not in in_pairs and len(os.listdir(data / identity)) >= 2 \
                and not (source / identity).exists():
            (source / identity).symlink_to((data / identity).resolve(), target_is_directory=True)
    prepared = work / "train-dlib150"
    report = prepare_dataset(source, prepared, size=150, detect=FaceFinder(), template="dlib")
    print(f"training chips: {report.written + report.already_done} written, "
          f"{len(report.skipped)} without a face")
    assert not set(os.listdir(source)) & in_pairs  # never train on a pair identity
    return prepared


def _dlib_importable() -> bool:
    try:
        import dlib  # noqa: F401
    except ImportError:
        print("dlib is not importable: its own pipeline's row is left out")
        return False
    return True


def _dlib_pipeline(vset):
    """dlib's own detection, alignment and descriptors (flip-summed)."""
    import dlib
    import face_recognition_models as models
    from PIL import Image

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
    network = dlib.face_recognition_model_v1(models.face_recognition_model_location())
    vectors, faceless = [], 0
    for path in vset.images:
        pixels = np.asarray(Image.open(path).convert("RGB"))
        boxes = detector(pixels, 1)
        if boxes:
            box = max(boxes, key=lambda box: box.area())
            chip = dlib.get_face_chip(pixels, predictor(pixels, box), size=150, padding=0.25)
        else:
            faceless += 1
            top = (pixels.shape[0] - 150) // 2
            left = (pixels.shape[1] - 150) // 2
            chip = np.ascontiguousarray(pixels[top:top + 150, left:left + 150])
        vectors.append(np.asarray(network.compute_face_descriptor(chip))
                       + np.asarray(network.compute_face_descriptor(
                           np.ascontiguousarray(chip[:, ::-1]))))
    from facekit.eval.sets import verify_set

    result, _ = verify_set(np.stack(vectors).astype(np.float32), vset)
    return result, None, faceless


def _raw_pixels(vset, finder, size: int = 150):
    """The protocol on the flattened pixels of facekit's ``size`` x ``size`` chips,
    flip-summed."""
    from PIL import Image

    from facekit.eval.sets import verify_set

    chips = {}
    for position, crop, _ in finder.aligned_files(vset.images, size):
        if crop is None:
            crop = np.asarray(Image.open(vset.images[position]).convert("RGB")
                              .resize((size, size)))
        chips[position] = crop.astype(np.float32)
    vectors = np.stack([(chips[i] + chips[i][:, ::-1]).reshape(-1)
                        for i in range(len(vset.images))])
    result, _ = verify_set(vectors, vset)
    return result


if __name__ == "__main__":
    sys.exit(main())
