"""Convert any identity-folder dataset to facekit's canonical layout.

DST/<identity>/<stem>.jpg, RGB, square, at the target size; optionally
center-cropped first (aligned LFW-style 250x250 images have the face in the
middle).  File stems are kept, so LFW pairs files still resolve.  An
insightface ``train.rec`` folder is extracted to DST/<identity>/<identity>_<n>.jpg.
Runs in parallel processes; unreadable files and records are skipped and reported.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from facekit.data.sources import FolderSource, open_source
from facekit.errors import FacekitError
from facekit.files import require_apart, require_new_folder

# Anything Pillow opens: JPEG, PNG, BMP, GIF, PGM/PPM, TIFF, WebP, ...
SOURCE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".pgm", ".ppm", ".pbm", ".pnm",
                     ".tif", ".tiff", ".webp")


@dataclass
class PrepareReport:
    written: int = 0
    identities: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def convert_image(source, target: str, size: int, crop: int | None,
                  landmarks=None) -> str | None:
    """Write one converted image; returns the reason it was skipped, or None.

    ``source`` is a file, or (reader, item) of an indexed format (a ``.rec`` record).
    With ``landmarks`` (5 points) the face is aligned to the ArcFace template.
    """
    try:
        if isinstance(source, tuple):
            reader, item = source
            source = io.BytesIO(reader.encoded(item))
        with Image.open(source) as image:
            image = image.convert("RGB")
            if landmarks is not None:
                from facekit.data.align import MIN_INSIDE, alignment_matrix, inside_fraction, warp

                matrix = alignment_matrix(landmarks, size)
                inside = inside_fraction(matrix, image.size, size)
                if inside < MIN_INSIDE:
                    return (f"its landmarks lie outside the image (only {inside:.0%} of the "
                            "aligned face would be inside it)")
                image = warp(image, matrix, size)
            elif crop:
                width, height = image.size
                side = min(crop, width, height)
                left, top = (width - side) // 2, (height - side) // 2
                image = image.crop((left, top, left + side, top + side))
            elif image.size[0] != image.size[1]:  # center square, so faces keep their shape
                side = min(image.size)
                left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
                image = image.crop((left, top, left + side, top + side))
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.LANCZOS)
            image.save(target, format="JPEG", quality=95)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            np.linalg.LinAlgError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _convert(job):
    source = job[0]
    name = source if isinstance(source, str) else source[0].name(source[1])
    return name, convert_image(*job)


def plan_jobs(source: Path, destination: Path, size: int, crop: int | None,
              landmarks: dict | None = None):
    """(source, target file, size, crop, landmarks) for every image, the identities, and
    the images skipped before conversion (no landmarks for them)."""
    opened = open_source(source)
    if not isinstance(opened, FolderSource):
        if landmarks is not None:
            raise FacekitError(f"--landmarks needs an image folder; '{source}' is "
                               f"{opened.description}: extract it first.")
        return _indexed_jobs(opened.index(verify=False), destination, size, crop)
    unmatched = []
    identities = sorted(e.name for e in os.scandir(source)
                        if e.is_dir() and not e.name.startswith("."))
    jobs = []
    for identity in identities:
        taken = set()
        for entry in sorted(os.scandir(source / identity), key=lambda e: e.name):
            if not (entry.is_file() and entry.name.lower().endswith(SOURCE_EXTENSIONS)):
                continue
            stem = Path(entry.name).stem
            name = stem if stem not in taken else f"{stem}_{len(taken)}"
            taken.add(name)
            points = None
            if landmarks is not None:
                points = landmarks.get(f"{identity}/{entry.name}", landmarks.get(entry.name))
                if points is None:
                    unmatched.append((entry.path, "no landmarks for it in --landmarks"))
                    continue
            jobs.append((entry.path, str(destination / identity / f"{name}.jpg"), size, crop,
                         points))
    return jobs, identities, unmatched


def _indexed_jobs(index, destination: Path, size: int, crop: int | None):
    """Jobs for every image of an index (a .rec's records): DST/<identity>/<identity>_<n>.jpg."""
    numbers = np.zeros(len(index.classes), np.int64)
    jobs = []
    for offset, label in zip(index.paths.tolist(), index.labels.tolist()):
        name = index.classes[label]
        numbers[label] += 1
        jobs.append(((index.reader, offset),
                     str(destination / name / f"{name}_{numbers[label]:04d}.jpg"), size, crop,
                     None))
    return jobs, list(index.classes), index.skipped


def prepare_dataset(source, destination, size: int = 112, crop: int | None = None,
                    workers: int | None = None, progress: bool = True,
                    landmarks=None) -> PrepareReport:
    """Convert ``source`` into ``destination``; ``landmarks`` (a file, see
    facekit.data.align.read_landmarks) aligns each listed image instead of cropping."""
    source, destination = Path(source), Path(destination)
    if landmarks is not None:
        if crop:
            raise FacekitError("Give --crop or --landmarks, not both: aligned faces are not "
                               "cropped.")
        from facekit.data.align import read_landmarks

        landmarks = read_landmarks(landmarks)
    if not source.is_dir():
        raise FacekitError(f"The source folder '{source}' does not exist.")
    if not 16 <= size <= 4096:
        raise FacekitError(f"--size must be in [16, 4096] pixels, got {size}.")
    if crop is not None and crop < 1:
        raise FacekitError(f"--crop must be at least 1 pixel, got {crop}.")
    require_apart(destination, source, what="destination")
    require_new_folder(destination, "destination folder")
    jobs, identities, unreadable = plan_jobs(source, destination, size, crop, landmarks)
    if not jobs:
        raise FacekitError(f"'{source}' holds no images in identity sub-folders; expected "
                           "SRC/<identity>/<image>.")
    for identity in identities:
        (destination / identity).mkdir(parents=True, exist_ok=True)
    report = PrepareReport(identities=len(identities), skipped=list(unreadable))
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        results = pool.map(_convert, jobs, chunksize=64)
        if progress:
            from rich.progress import track

            results = track(results, total=len(jobs), description="Converting")
        for path, reason in results:
            if reason is None:
                report.written += 1
            else:
                report.skipped.append((path, reason))
    return report
