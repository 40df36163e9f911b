"""Faces in photos: the detector contract, which faces to keep, and their aligned crops.

A detector plugin (``facekit_register_detectors``) returns, per image, the faces it
found as :class:`Face` objects: a box, a confidence and five landmarks in the order
of facekit's ArcFace template (left eye, right eye, nose tip, left and right mouth
corner; "left" is the image's left).  :class:`FaceFinder` is what the ``--detect``
options of ``prepare``, ``compare``, ``identify``, ``embed`` and ``eval`` resolve to:
it runs the detector, drops faces below ``min_face_size`` or ``min_confidence``,
keeps the largest (or all) and aligns each to the template with
facekit.data.align.  Light at import: the detector's own library loads when the
first image is detected.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Iterator, Protocol

import numpy as np

from facekit.data.align import (MIN_INSIDE, TEMPLATES, alignment_matrix, inside_fraction,
                                 warp)
from facekit.errors import FacekitError

# Photos are detected at most this large (longest side, pixels) and aligned from the
# full-resolution image: a 12-megapixel phone photo would otherwise cost seconds.
DETECT_MAX_SIDE = 1280
FACE_CHOICES = ("largest", "all")


@dataclass(frozen=True)
class Face:
    """One detected face, in the pixel coordinates of the image it was found in.

    Args:
        box: (x1, y1, x2, y2).
        confidence: the detector's score in [0, 1].
        landmarks: (5, 2) points (x, y): left eye, right eye, nose tip, left and right
            mouth corner, image-left first (facekit.data.align.ARCFACE_TEMPLATE's order).
    """

    box: np.ndarray
    confidence: float
    landmarks: np.ndarray

    @property
    def size(self) -> float:
        """The shorter side of the box, in pixels."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    def scaled(self, factor: float) -> "Face":
        return Face(self.box * factor, self.confidence, self.landmarks * factor)


class Detector(Protocol):
    """What a detector factory returns."""

    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        """The faces in each RGB uint8 image (H, W, 3), in any order."""


@dataclass(frozen=True)
class Found:
    """What detection gave for one image: the faces kept (largest first) or why none."""

    faces: list[Face] = field(default_factory=list)
    reason: str | None = None


@dataclass(frozen=True)
class FaceFinder:
    """Detect faces, keep those big and sure enough, and align them.

    Args:
        detector: a registered detector's name (``facekit list-plugins --kind detector``).
        options: its options (``--detector-opt key=value`` strings or a dict).
        min_face_size: faces whose box's shorter side is smaller (pixels) are dropped.
        min_confidence: faces the detector is less sure of are dropped.
        faces: ``largest`` keeps one face per image, ``all`` every face, largest first.
        template: the alignment template (facekit.data.align.TEMPLATES): ``arcface``,
            or ``dlib`` for dlib's face chips.

    Examples:
        >>> finder = FaceFinder()
        >>> crops, reasons = finder.aligned_files(["a.jpg", "b.jpg"], size=112)
    """

    detector: str = "mtcnn"
    options: tuple = ()
    min_face_size: int = 20
    min_confidence: float = 0.9
    faces: str = "largest"
    template: str = "arcface"

    def __post_init__(self):
        if self.faces not in FACE_CHOICES:
            raise FacekitError(f"--faces must be one of {', '.join(FACE_CHOICES)}, got "
                               f"'{self.faces}'.")
        if self.template not in TEMPLATES:
            raise FacekitError(f"The alignment template must be one of "
                               f"{', '.join(TEMPLATES)}, got '{self.template}'.")
        if not 1 <= self.min_face_size <= 4096:
            raise FacekitError(f"--min-face-size must be in [1, 4096] pixels, got "
                               f"{self.min_face_size}.")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise FacekitError(f"--min-confidence must be in [0, 1], got "
                               f"{self.min_confidence}.")
        options = self.options
        if isinstance(options, dict):
            options = tuple(f"{key}={value}" for key, value in options.items())
        object.__setattr__(self, "options", tuple(options or ()))
        self.resolved  # an unknown detector or option is refused before any work

    @functools.cached_property
    def resolved(self):
        from facekit.components import resolve
        from facekit.registry import get_registry

        return resolve(get_registry(), "detector", self.detector, list(self.options))

    @functools.cached_property
    def model(self) -> Detector:
        return self.resolved.build()

    def describe(self) -> dict:
        """What a run folder or a landmarks file records about this detection."""
        return {"detector": self.detector, "options": self.resolved.options,
                "min_face_size": self.min_face_size, "min_confidence": self.min_confidence,
                "faces": self.faces, "template": self.template}

    def find(self, images: list[np.ndarray]) -> list[Found]:
        """The faces kept in each image (RGB uint8 arrays)."""
        small, factors = zip(*(_shrunk(image) for image in images)) if images else ((), ())
        detected = self.model.detect(list(small))
        if len(detected) != len(images):
            raise FacekitError(f"The detector '{self.detector}' returned {len(detected)} "
                               f"results for {len(images)} images.")
        return [self._keep([face.scaled(factor) for face in faces])
                for faces, factor in zip(detected, factors)]

    def _keep(self, faces: list[Face]) -> Found:
        if not faces:
            return Found(reason="no face found")
        sure = [face for face in faces if face.confidence >= self.min_confidence]
        if not sure:
            best = max(face.confidence for face in faces)
            return Found(reason=f"no face with confidence ≥ {self.min_confidence} "
                                f"(the best is {best:.3f})")
        big = [face for face in sure if face.size >= self.min_face_size]
        if not big:
            largest = max(face.size for face in sure)
            return Found(reason=f"no face of at least {self.min_face_size} px (the largest is "
                                f"{largest:.0f} px)")
        big.sort(key=lambda face: face.size, reverse=True)
        return Found(big if self.faces == "all" else big[:1])

    def aligned(self, images, size: int) -> Iterator[tuple[list, list[Face], str | None]]:
        """Per image (PIL, RGB): (aligned size×size crops, their faces, why none)."""
        images = list(images)
        for image, found in zip(images, self.find([np.asarray(image) for image in images])):
            crops, kept, reason = [], [], found.reason
            for face in found.faces:
                matrix = alignment_matrix(face.landmarks, size, self.template)
                inside = inside_fraction(matrix, image.size, size)
                if inside < MIN_INSIDE:
                    reason = (f"its face lies at the edge (only {inside:.0%} of the aligned "
                              "face would be inside the image)")
                    continue
                crops.append(warp(image, matrix, size))
                kept.append(face)
            yield crops, kept, None if crops else reason

    def aligned_files(self, paths, size: int, batch_size: int = 16,
                      progress: bool = False) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
        """(position, first aligned face as uint8 (size, size, 3) or None, why none) of
        every file, in order; unreadable files say why too."""
        paths = list(paths)
        bar = None
        if progress:
            from facekit.console import progress_bar

            bar = progress_bar(len(paths))
        for start in range(0, len(paths), batch_size):
            chunk = list(enumerate(paths[start:start + batch_size], start))
            opened, readable = [], []
            for position, path in chunk:
                image, reason = open_photo(path)
                if image is None:
                    yield position, None, reason
                else:
                    opened.append(image)
                    readable.append(position)
            for position, (crops, _, reason) in zip(readable, self.aligned(opened, size)):
                yield position, np.asarray(crops[0]) if crops else None, reason
            if bar is not None:
                bar.add(len(chunk))


def open_photo(path):
    """(PIL RGB image, None) with its EXIF orientation applied, or (None, why not)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return ImageOps.exif_transpose(image).convert("RGB"), None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _shrunk(image: np.ndarray) -> tuple[np.ndarray, float]:
    """The image at most DETECT_MAX_SIDE on its longest side, and the factor back."""
    side = max(image.shape[:2])
    if side <= DETECT_MAX_SIDE:
        return image, 1.0
    from PIL import Image

    factor = side / DETECT_MAX_SIDE
    width, height = round(image.shape[1] / factor), round(image.shape[0] / factor)
    small = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(small), image.shape[1] / width
