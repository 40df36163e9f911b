"""Similarity thresholds that travel with a model.

``facekit eval`` measures, on all the pairs it evaluated, the cosine
similarity above which two faces are called the same person at a false
accept rate (FAR) of 1e-2, 1e-3 and 1e-4, and writes them beside the model
(``thresholds.json``); ``facekit compare`` uses them and ``facekit export``
copies them into the exported model's metadata.  The similarity is the
cosine of the L2-normalized, flip-summed embeddings: 1 - d/2 for the squared
distance d that verification reports.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facekit.errors import FacekitError
from facekit.eval.verification import FAR_TARGETS
from facekit.files import write_atomic

THRESHOLD_FARS = FAR_TARGETS
THRESHOLDS_FILE = "thresholds.json"
SIMILARITY = "cosine similarity of L2-normalized embeddings, each the sum of the image's and " \
             "its mirror image's"
# What every exported model expects; stated once, here.
INPUT_CONVENTION = {"channels": "RGB", "pixel_range": [0, 255], "dtype": "float32",
                    "alignment": "5-point similarity transform to the ArcFace 112x112 template"}


def far_key(far: float) -> str:
    return f"{far:.0e}"


def similarity_thresholds(distances, issame, sets: list[str]) -> dict:
    """The similarity threshold at each FAR the negative pairs can measure: the lowest
    similarity whose FAR is at most the target (accept when similarity > threshold)."""
    from facekit.eval.verification import tar_at_far

    distances = np.asarray(distances, np.float64)
    issame = np.asarray(issame, bool)
    negatives = int((~issame).sum())
    thresholds = {}
    for far in THRESHOLD_FARS:
        key = far_key(far)
        if negatives * far < 1:
            thresholds[key] = {"threshold": None, "reason": f"{negatives} different-person pairs "
                               f"cannot measure a FAR of {key}; it needs {int(1 / far):,}"}
            continue
        tar, achieved, distance = tar_at_far(distances, issame, far)
        thresholds[key] = {"threshold": float(1 - distance / 2) if np.isfinite(distance)
                           else -1.0, "far": achieved, "tar": tar}
    return {"similarity": SIMILARITY, "sets": sets, "pairs": int(len(issame)),
            "negative_pairs": negatives, "at_far": thresholds}


def thresholds_path(model) -> Path:
    """Where a model's thresholds live: its run folder, or beside its .keras file."""
    from facekit.run_folder import model_file

    return model_file(model).parent / THRESHOLDS_FILE


def write_thresholds(model, thresholds: dict) -> tuple[Path, dict | None]:
    """Write the thresholds beside the model, unless those already there were measured
    on more different-person pairs (a small set never replaces a large one's figures).
    Returns the path and, when it was kept, the earlier file's contents."""
    path = thresholds_path(model)
    try:
        earlier = read_thresholds(model)
    except FacekitError:
        earlier = None  # not a thresholds file: replaced
    if earlier is not None and earlier.get("negative_pairs", 0) > thresholds["negative_pairs"]:
        return path, earlier
    write_atomic(path, json.dumps(thresholds, indent=2) + "\n")
    return path, None


def read_thresholds(model) -> dict | None:
    path = thresholds_path(model)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data.get("at_far"), dict):
            raise ValueError("no at_far table")
    except (ValueError, AttributeError) as exc:
        raise FacekitError(f"'{path}' is not a thresholds file written by facekit eval "
                           f"({exc}); run facekit eval again.") from None
    return data


def threshold_at(model, far: float) -> float:
    """The similarity threshold of ``model`` at ``far``, as ``facekit eval`` measured it."""
    data = read_thresholds(model)
    if data is None:
        raise FacekitError(f"The model has no {THRESHOLDS_FILE} beside it; run facekit eval on "
                           "it first (with --bin, --pairs or --auto-pairs).")
    entry = data["at_far"].get(far_key(far))
    if entry is None:
        raise FacekitError(f"No threshold at FAR {far_key(far)}; facekit eval measures "
                           f"{', '.join(far_key(f) for f in THRESHOLD_FARS)}.")
    if entry.get("threshold") is None:
        raise FacekitError(f"No threshold at FAR {far_key(far)}: {entry.get('reason')}; "
                           "evaluate on more pairs or choose a larger --far.")
    return float(entry["threshold"])


def usable_threshold(model, far: float) -> tuple[float | None, str | None]:
    """(threshold at ``far``, None), or (None, why there is none and which FARs have one):
    ``compare`` prints the similarity either way and decides only when it can."""
    try:
        return threshold_at(model, far), None
    except FacekitError as exc:
        data = read_thresholds(model)
        measured = [key for key, entry in (data or {}).get("at_far", {}).items()
                    if entry.get("threshold") is not None]
        reason = str(exc).rstrip(".")
        if measured:
            reason += f"; thresholds exist at FAR {', '.join(measured)} (--far)"
        return None, reason

