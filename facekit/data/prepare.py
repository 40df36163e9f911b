"""Convert any identity-folder dataset to facekit's canonical layout.

DST/<identity>/<stem>.jpg, RGB, square, at the target size, in one of four ways
(``ALIGNMENTS``): the centre square resized; a centre crop first (aligned
LFW-style 250x250 images have the face in the middle); aligned to the ArcFace
template by 5 landmarks from a file; or by 5 landmarks a face detector finds
(``--detect``, which writes DST/landmarks.txt so ``--landmarks`` replays it).
File stems are kept, so LFW pairs files still resolve; an image with several
faces (``--faces all``) gives ``<stem>.jpg`` for the largest and
``<stem>-face2.jpg``… for the others.  An insightface ``train.rec`` folder is
extracted to DST/<identity>/<identity>_<n>.jpg.

DST/.facekit-prepare.json records the source and the options.  Every image is
written through a temporary name, so a file that exists is whole: an
interrupted prepare run again with the same source and options continues where
it stopped, and any other folder that is not empty is refused.  Unreadable files
and images without a usable face are skipped and reported.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from facekit.data.align import TEMPLATES
from facekit.data.index import LANDMARKS_FILE
from facekit.data.sources import FolderSource, open_source
from facekit.errors import FacekitError
from facekit.files import require_apart, require_new_folder, write_atomic

# Anything Pillow opens: JPEG, PNG, BMP, GIF, PGM/PPM, TIFF, WebP, ...
SOURCE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".pgm", ".ppm", ".pbm", ".pnm",
                     ".tif", ".tiff", ".webp")
MANIFEST = ".facekit-prepare.json"
PARTIAL = ".partial"  # the suffix of an image being written
ALIGNMENTS = ("resize", "center-crop", "landmarks", "detect")
DETECT_BATCH = 32  # images detected at once (mtcnn batches same-size images)


@dataclass
class PrepareReport:
    written: int = 0
    identities: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    already_done: int = 0  # images a previous, interrupted prepare wrote
    landmarks: Path | None = None  # the landmarks --detect used


def preprocessing(data) -> dict | None:
    """How ``prepare`` made the images of a folder (its manifest's ``alignment``), or None
    for a folder it did not make."""
    path = Path(data) / MANIFEST
    try:
        return json.loads(path.read_text())["alignment"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def describe_alignment(alignment: dict | None) -> str:
    """One phrase for what a model expects: "faces aligned to ArcFace's 5-point template…"."""
    if not alignment:
        return "images as given (no record of how they were prepared)"
    size = alignment.get("size")
    at = f" at {size}x{size}" if size else ""
    method = alignment.get("method")
    template = {"dlib": "dlib's face chip"}.get(alignment.get("template"),
                                                   "the ArcFace 5-point template")
    if method == "detect":
        return (f"faces detected ({alignment.get('detector', 'a detector')}) and aligned to "
                f"{template}{at}")
    if method == "landmarks":
        return f"faces aligned to {template}{at} by landmarks"
    if method == "center-crop":
        return f"a centre crop of {alignment.get('crop')} pixels resized{at.replace(' at', ' to')}"
    return f"the centre square resized{at.replace(' at', ' to')}"


def _save(image, target: str) -> None:
    """Write a JPEG through a temporary name: a file at ``target`` is always whole."""
    partial = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}{PARTIAL}")
    image.save(partial, format="JPEG", quality=95)
    os.replace(partial, target)


def convert_image(source, target: str, size: int, crop: int | None,
                  landmarks=None, template: str = "arcface") -> str | None:
    """Write one converted image; returns the reason it was skipped, or None.

    ``source`` is a file, or (reader, item) of an indexed format (a ``.rec`` record).
    With ``landmarks`` (5 points) the face is aligned to ``template``
    (facekit.data.align.TEMPLATES).
    """
    try:
        if isinstance(source, tuple):
            reader, item = source
            source = io.BytesIO(reader.encoded(item))
        with Image.open(source) as image:
            image = image.convert("RGB")
            if landmarks is not None:
                from facekit.data.align import MIN_INSIDE, alignment_matrix, inside_fraction, warp

                matrix = alignment_matrix(landmarks, size, template)
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
            _save(image, target)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            np.linalg.LinAlgError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _convert(job):
    source = job[0]
    name = source if isinstance(source, str) else source[0].name(source[1])
    return name, convert_image(*job)


def face_target(target: str, number: int) -> str:
    """The file of an image's ``number``-th face (1 = the largest keeps the stem)."""
    return target if number == 1 else target[:-len(".jpg")] + f"-face{number}.jpg"


def plan_jobs(source: Path, destination: Path, size: int, crop: int | None,
              landmarks: dict | None = None, template: str = "arcface"):
    """(source, target file, size, crop, landmarks, template) for every image (one per face listed
    in ``landmarks``), the identities, and the images skipped before conversion."""
    opened = open_source(source)
    if not isinstance(opened, FolderSource):
        if landmarks is not None:
            raise FacekitError(f"--landmarks and --detect need an image folder; '{source}' is "
                               f"{opened.description}: extract it first.")
        return _indexed_jobs(opened.index(verify=False), destination, size, crop)
    unmatched = []
    jobs = []
    for identity, key, path, target in _folder_images(source, destination):
        if landmarks is None:
            jobs.append((path, target, size, crop, None))
            continue
        faces = landmarks.get(key, landmarks.get(Path(path).name))
        if faces is None:
            unmatched.append((path, "no landmarks for it in --landmarks"))
            continue
        jobs += [(path, face_target(target, number), size, crop, points, template)
                 for number, points in enumerate(faces, start=1)]
    return jobs, _identities(source), unmatched


def _identities(source: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(source) if e.is_dir() and not e.name.startswith("."))


def _folder_images(source: Path, destination: Path):
    """(identity, "identity/file", source file, target file) of every image of a folder."""
    for identity in _identities(source):
        taken = set()
        for entry in sorted(os.scandir(source / identity), key=lambda e: e.name):
            if not (entry.is_file() and entry.name.lower().endswith(SOURCE_EXTENSIONS)):
                continue
            stem = Path(entry.name).stem
            name = stem if stem not in taken else f"{stem}_{len(taken)}"
            taken.add(name)
            yield (identity, f"{identity}/{entry.name}", entry.path,
                   str(destination / identity / f"{name}.jpg"))


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
                    landmarks=None, detect=None, template: str = "arcface") -> PrepareReport:
    """Convert ``source`` into ``destination``.

    Args:
        source: an identity folder (any image format) or an insightface ``.rec`` folder.
        destination: a new or empty folder, or one an interrupted prepare of the same
            source with the same options left (it continues).
        size: the output size in pixels (square).
        crop: centre-crop this many source pixels first.
        landmarks: a landmarks file (facekit.data.align.read_landmarks): align each listed
            face instead of cropping.
        detect: a facekit.data.detect.FaceFinder: find and align the faces.
        template: what ``landmarks`` and ``detect`` align to (facekit.data.align.TEMPLATES):
            ``arcface``, or ``dlib`` (dlib's chip, with ``size=150``, for --init-from dlib).

    Examples:
        >>> from facekit.data.detect import FaceFinder
        >>> report = prepare_dataset("photos", "faces", detect=FaceFinder())
        >>> report.written, report.skipped[:1]
    """
    source, destination = Path(source), Path(destination)
    if sum(option is not None and option is not False
           for option in (crop, landmarks, detect)) > 1:
        raise FacekitError("Give one of --crop, --landmarks and --detect: aligned faces are "
                           "not cropped.")
    if not source.is_dir():
        raise FacekitError(f"The source folder '{source}' does not exist.")
    if not 16 <= size <= 4096:
        raise FacekitError(f"--size must be in [16, 4096] pixels, got {size}.")
    if crop is not None and crop < 1:
        raise FacekitError(f"--crop must be at least 1 pixel, got {crop}.")
    if template not in TEMPLATES:
        raise FacekitError(f"--template must be one of {', '.join(TEMPLATES)}, got "
                           f"'{template}'.")
    if template != "arcface" and landmarks is None and detect is None:
        raise FacekitError("--template chooses what --landmarks or --detect align faces to; "
                           "give one of them.")
    if detect is not None:
        detect = dataclasses.replace(detect, template=template)
    alignment = _alignment(size, crop, landmarks, detect, template)
    points = None
    if landmarks is not None:
        from facekit.data.align import read_landmarks

        points = read_landmarks(landmarks)
    require_apart(destination, source, what="destination")
    manifest = {"source": str(source.resolve()), "alignment": alignment}
    resuming = _resumable(destination, manifest)
    if detect is not None:
        if not isinstance(open_source(source), FolderSource):
            raise FacekitError(f"--detect needs an image folder; '{source}' is "
                               f"{open_source(source).description}: extract it first.")
        jobs = [(path, target) for _, _, path, target in _folder_images(source, destination)]
        identities, unreadable = _identities(source), []
    else:
        jobs, identities, unreadable = plan_jobs(source, destination, size, crop, points,
                                                 template)
    if not jobs:
        raise FacekitError(f"'{source}' holds no images in identity sub-folders; expected "
                           "SRC/<identity>/<image>.")
    destination.mkdir(parents=True, exist_ok=True)
    write_atomic(destination / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    for identity in identities:
        (destination / identity).mkdir(parents=True, exist_ok=True)
    report = PrepareReport(identities=len(identities), skipped=list(unreadable))
    if detect is not None:
        _detect_faces(jobs, detect, size, source, destination, report, progress)
        return report
    if resuming:
        left = [job for job in jobs if not os.path.exists(job[1])]
        report.already_done, jobs = len(jobs) - len(left), left
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


def _alignment(size: int, crop, landmarks, detect, template: str = "arcface") -> dict:
    """What the manifest (and a run trained on the folder) records about the images."""
    if detect is not None:
        return {"method": "detect", "size": size, **detect.describe()}
    if landmarks is not None:
        return {"method": "landmarks", "size": size, "template": template,
                "landmarks": str(Path(landmarks).resolve())}
    if crop:
        return {"method": "center-crop", "size": size, "crop": crop}
    return {"method": "resize", "size": size}


def _resumable(destination: Path, manifest: dict) -> bool:
    """Whether ``destination`` is an interrupted prepare of the same source and options;
    otherwise it must be new or empty."""
    recorded = destination / MANIFEST
    if not recorded.is_file():
        require_new_folder(destination, "destination folder")
        return False
    try:
        previous = json.loads(recorded.read_text())
    except (OSError, ValueError):
        previous = None
    if previous != manifest:
        raise FacekitError(f"The destination folder '{destination}' was prepared from another "
                           "source or with other options; facekit continues a prepare only "
                           "with the same ones: choose another folder.")
    for partial in destination.glob(f"*/.*{PARTIAL}"):  # what the interruption cut short
        partial.unlink()
    return True


def _detect_faces(jobs, finder, size: int, source: Path, destination: Path,
                  report: PrepareReport, progress: bool) -> None:
    """Detect, align and write every image's faces; append the landmarks used to
    DST/landmarks.txt, one line per face, after the image's files are written (so a
    listed image is done, and a re-run skips it)."""
    from facekit.data.align import landmarks_line
    from facekit.data.detect import open_photo

    landmarks = destination / LANDMARKS_FILE
    done = _listed_images(landmarks)
    keys = {path: os.path.relpath(path, source).replace(os.sep, "/") for path, _ in jobs}
    left = [(path, target) for path, target in jobs if keys[path] not in done]
    report.already_done = len(jobs) - len(left)
    report.landmarks = landmarks
    batches = [left[start:start + DETECT_BATCH] for start in range(0, len(left), DETECT_BATCH)]
    if progress:
        from rich.progress import track

        batches = track(batches, description="Detecting")
    with open(landmarks, "a", encoding="utf-8") as listed, ThreadPoolExecutor(2) as pool:
        if not done:
            listed.write(f"# facekit prepare --detect: {json.dumps(finder.describe())}\n")
        for batch in batches:
            opened = list(pool.map(lambda job: open_photo(job[0]), batch))
            readable = [(job, image) for job, (image, _) in zip(batch, opened) if image]
            report.skipped += [(job[0], reason) for job, (image, reason) in zip(batch, opened)
                               if image is None]
            found = finder.aligned([image for _, image in readable], size)
            lines = []
            for ((path, target), _), (crops, faces, reason) in zip(readable, found):
                if not crops:
                    report.skipped.append((path, reason))
                    continue
                targets = [face_target(target, number) for number in range(1, len(crops) + 1)]
                list(pool.map(_save, crops, targets))
                report.written += len(crops)
                lines += [landmarks_line(keys[path], face.landmarks, face.confidence)
                          for face in faces]
            listed.write("".join(lines))
            listed.flush()


def _listed_images(landmarks: Path) -> set[str]:
    """The images an earlier, interrupted prepare --detect finished (a line cut short by
    the interruption is dropped from the file)."""
    if not landmarks.is_file():
        return set()
    text = landmarks.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
        landmarks.write_text(text, encoding="utf-8")
    return {line.split(maxsplit=1)[0] for line in text.splitlines()
            if line.strip() and not line.startswith("#")}
