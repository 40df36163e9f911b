"""Unaligned photos: what face detection is worth when faces are not already aligned.

LFW-a's images are aligned already (a similarity transform put every face in the
same place), so a centre crop is nearly an alignment, and detecting gains little on
them (benchmarks/lfw_subset.py --prepare crop,detect).  Photos people take are not
aligned.  This script re-poses each pair image of the LFW subset as such a photo:
rotated (±25°), scaled (0.7–1.3) and shifted (±40 px) at random on a 400×400 canvas
with its borders extended, seeded, so the face is anywhere in the frame at any angle.
Then it verifies the 1,800 pairs three ways, each with the model trained on images
made the same way (by ``lfw_subset.py``):

- centre crop: ``facekit prepare --crop`` of the photos, the crop-trained model;
- detected: ``facekit prepare --detect`` of the photos, the detect-trained model
  (a photo without a face falls back to its centre crop, counted);
- raw pixels of each, as the baseline.

    python benchmarks/lfw_subset.py --prepare crop,detect --work W   # trains both
    python benchmarks/lfw_photos.py --crop-run W/run-crop-… --detect-run W/run-detect-…
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CANVAS = 400


def repose(image, rng):
    """The 250x250 image as a 400x400 photo with the face somewhere, at some angle."""
    from PIL import Image

    array = np.asarray(image.convert("RGB"))
    pad = CANVAS  # wide enough for any pose: no black corners
    padded = Image.fromarray(np.pad(array, ((pad, pad), (pad, pad), (0, 0)), mode="edge"))
    angle, scale = rng.uniform(-25, 25), rng.uniform(0.7, 1.3)
    shift = rng.uniform(-40, 40, size=2)
    centre = np.array(padded.size) / 2
    # PIL's affine maps output pixels to input ones: rotate and scale about the centre.
    turn = np.radians(angle)
    inverse = np.array([[np.cos(turn), np.sin(turn)], [-np.sin(turn), np.cos(turn)]]) / scale
    offset = centre - inverse @ (np.array([CANVAS, CANVAS]) / 2 + shift)
    photo = padded.transform((CANVAS, CANVAS), Image.Transform.AFFINE,
                             (*inverse[0], offset[0], *inverse[1], offset[1]),
                             resample=Image.Resampling.BILINEAR)
    return photo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "lfw_a_subset")
    parser.add_argument("--pairs", type=Path, default=SHARED / "lfw_a_subset_pairs.txt")
    parser.add_argument("--crop-run", type=Path, required=True)
    parser.add_argument("--detect-run", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.data.is_dir() or not args.pairs.is_file():
        print(f"LFW subset not found at {args.data}; nothing to do.")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = args.work or Path(tempfile.mkdtemp(prefix="facekit-photos-"))

    from PIL import Image

    import facekit
    from facekit.data.detect import FaceFinder
    from facekit.data.prepare import prepare_dataset
    from facekit.eval.pairs import read_pairs
    from facekit.eval.sets import VerificationSet, evaluate_set

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from lfw_subset import raw_pixel_result

    in_pairs = sorted({name for a, _, b, _ in read_pairs(args.pairs).pairs for name in (a, b)})
    photos = work / "photos"
    if not photos.is_dir():
        rng = np.random.default_rng(args.seed)
        for identity in in_pairs:
            (photos / identity).mkdir(parents=True)
            for path in sorted((args.data / identity).iterdir()):
                repose(Image.open(path), rng).save(photos / identity / path.name, quality=95)
    crop = int(150 * CANVAS / 250)  # the crop lfw_subset.py uses, in the photo's frame
    cropped, detected = work / "cropped", work / "detected"
    if not cropped.is_dir():
        prepare_dataset(photos, cropped, size=112, crop=crop, progress=False)
    report = prepare_dataset(photos, detected, size=112, detect=FaceFinder(), progress=False)
    found = report.written + report.already_done
    total = found + len(report.skipped)
    missing = {Path(path).relative_to(photos) for path, _ in report.skipped}
    for name in missing:  # the fallback: its centre crop
        target = (detected / name).with_suffix(".jpg")
        if not target.exists():
            target.write_bytes((cropped / name).with_suffix(".jpg").read_bytes())
    rows = []
    for label, folder, run in (("centre crop", cropped, args.crop_run),
                               ("detected and aligned", detected, args.detect_run)):
        vset = VerificationSet.from_pairs(folder, args.pairs)
        trained, _ = evaluate_set(facekit.load_model(run), vset)
        rows += [(f"{label}: trained model", trained), (f"{label}: raw pixels",
                                                        raw_pixel_result(vset))]
    print(f"\nLFW subset pairs re-posed as photos (seed {args.seed}): {len(vset.issame)} "
          f"pairs, {vset.folds} folds; faces found in {found} of {total} photos "
          f"({found / total:.1%}; the others use their centre crop)")
    print(f"{'':<36}{'accuracy':>18}{'AUC':>8}")
    for name, result in rows:
        print(f"{name:<36}{result.accuracy:>10.4f} ± {result.accuracy_std:.4f}"
              f"{result.auc:>8.4f}")
    print(f"  models: crop {args.crop_run}, detect {args.detect_run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
