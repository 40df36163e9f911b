"""Face alignment from 5-point landmarks: the similarity transform to a template.

A template is where the eyes, nose tip and mouth corners of an aligned face
are: ``arcface`` is insightface's 112x112 one (every facekit-trained model's),
``dlib`` the same five points in dlib's 150x150 face chip (what dlib's face
descriptor network takes; ``benchmarks/dlib_template.py`` measures it).  The transform (rotation, uniform scale,
translation) is the least-squares one of Umeyama (1991), which insightface's
``face_align.estimate_norm`` gets from scikit-image; the warp uses bilinear
sampling with black outside the source image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facekit.errors import FacekitError
from facekit.files import read_text

# (x, y) of left eye, right eye, nose tip, left and right mouth corner at 112x112.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)
# The same points (as mtcnn finds them) in dlib's 150x150 chip (get_face_chip_details,
# padding 0.25): their mean over LFW faces, measured by benchmarks/dlib_template.py.
DLIB_TEMPLATE = np.array([[47.6212, 45.5293], [101.6094, 45.2802], [73.9957, 77.6952],
                          [51.4694, 105.7105], [98.0137, 105.7142]], np.float64)
# name: (points, the square size they are given at)
TEMPLATES = {"arcface": (ARCFACE_TEMPLATE, 112), "dlib": (DLIB_TEMPLATE, 150)}


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 matrix M of the similarity transform that maps ``source`` points onto
    ``target`` points best in least squares (Umeyama): target ≈ M @ [x, y, 1]."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2:
        raise ValueError(f"expected two (n, 2) point sets, got {source.shape} and "
                         f"{target.shape}")
    mean_s, mean_t = source.mean(axis=0), target.mean(axis=0)
    s, t = source - mean_s, target - mean_t
    variance = np.mean(np.sum(s * s, axis=1))
    if variance <= 1e-12:
        raise ValueError("the landmarks coincide")
    covariance = t.T @ s / len(source)
    u, d, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection: flip the weakest axis
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(d) @ sign) / variance
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = mean_t - scale * rotation @ mean_s
    return matrix


def alignment_matrix(landmarks, size: int = 112, template: str = "arcface") -> np.ndarray:
    """The matrix mapping an image's 5 landmarks onto ``template`` at ``size``."""
    points, native = TEMPLATES[template]
    return similarity_transform(np.asarray(landmarks, np.float64).reshape(5, 2),
                                points * (size / native))


def warp(image, matrix: np.ndarray, size: int):
    """``image`` (PIL) warped by ``matrix`` (source → target) into a size×size image."""
    from PIL import Image

    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(full)[:2]  # PIL samples the source at inverse(target point)
    return image.transform((size, size), Image.Transform.AFFINE, inverse.ravel().tolist(),
                           resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))


def inside_fraction(matrix: np.ndarray, image_size: tuple[int, int], size: int) -> float:
    """The fraction of the aligned size×size crop that samples inside the source image
    (``image_size`` = (width, height)); the rest would be black fill."""
    grid = (np.arange(16) + 0.5) * size / 16
    x, y = np.meshgrid(grid, grid)
    targets = np.stack([x.ravel(), y.ravel(), np.ones(x.size)])
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    source_x, source_y = inverse @ targets
    width, height = image_size
    return float(np.mean((source_x >= 0) & (source_x < width)
                         & (source_y >= 0) & (source_y < height)))


# An aligned face less than this much inside its photo is landmarks gone wrong.
MIN_INSIDE = 0.5


def align_face(image, landmarks, size: int = 112):
    """``image`` (PIL, RGB) aligned to the ArcFace template by its 5 landmarks."""
    return warp(image, alignment_matrix(landmarks, size), size)


def read_landmarks(path) -> dict[str, list[np.ndarray]]:
    """A landmarks file: per line an image path and its 5 points ``x1 y1 … x5 y5``, with
    an optional detector score after them (IJB's ``*_name_5pts_score.txt`` layout).
    An image listed on several lines has several faces (``prepare --detect --faces all``
    writes one line per face, largest first).
    Returns {path as written: [(5, 2) points, one per face]}."""
    found: dict[str, list[np.ndarray]] = {}
    for name, points, _ in _landmark_lines(path):
        found.setdefault(name, []).append(points)
    return found


def read_landmarks_with_scores(path) -> dict[str, tuple[np.ndarray, float]]:
    """{image: (its 5 points, the line's detector score, 1.0 when absent)}: one face per
    image, as IJB's files list them (the last line of an image counts)."""
    return {name: (points, score) for name, points, score in _landmark_lines(path)}


def _landmark_lines(path):
    path = Path(path)
    if not path.is_file():
        raise FacekitError(f"The landmarks file '{path}' does not exist.")
    found = []
    for number, line in enumerate(read_text(path, "The landmarks file").splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) not in (11, 12):
            raise FacekitError(f"{path}:{number}: expected an image name and 10 coordinates "
                               f"(and optionally a score), got {len(fields)} fields.")
        try:
            values = np.array(fields[1:], np.float64)
        except ValueError:
            raise FacekitError(f"{path}:{number}: the coordinates are not numbers.") from None
        if not np.all(np.isfinite(values)):
            raise FacekitError(f"{path}:{number}: the coordinates are not finite.")
        found.append((fields[0], values[:10].reshape(5, 2),
                      float(values[10]) if len(values) == 11 else 1.0))
    if not found:
        raise FacekitError(f"The landmarks file '{path}' lists no image.")
    return found


def landmarks_line(name: str, points: np.ndarray, score: float) -> str:
    """One line of a landmarks file; the coordinates round-trip exactly (repr), so a
    replay with ``prepare --landmarks`` warps the very same crops."""
    values = " ".join(repr(float(v)) for v in np.asarray(points, np.float64).ravel())
    return f"{name} {values} {float(score)!r}\n"
