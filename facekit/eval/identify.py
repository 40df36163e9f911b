"""1:N identification: a gallery of known people, probes ranked against it.

Each gallery identity is one template: the mean of its images' L2-normalized
(flip-summed) embeddings, normalized again, as insightface pools the images
of a template.  A probe's candidates are the identities in order of cosine
similarity to their templates; rank-k accuracy counts the probes whose
identity is among the first k.  Probes of people the gallery does not hold
are listed but not counted.  Gallery embeddings are cached per model and
gallery state, so searching again with new probes embeds only the probes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facekit.eval.verification import l2_normalize
from facekit.files import cache_dir, unique_temporary

RANKS = (1, 5)


@dataclass
class Gallery:
    classes: list[str]
    templates: np.ndarray  # (identities, dim), unit rows
    images: int
    skipped: list = field(default_factory=list)  # (path, reason) of the unreadable files


def gallery_cache_path(model_path, gallery: Path, flip: bool, faces=None) -> Path:
    """A cache file named by the model file's identity, the gallery's fingerprint and
    how faces were found (``faces``, a FaceFinder, or None)."""
    import json

    from facekit.data.index import fingerprint
    from facekit.run_folder import model_file

    model_path = model_file(model_path).resolve()
    stat = model_path.stat()
    detection = json.dumps(faces.describe(), sort_keys=True) if faces is not None else None
    key = hashlib.sha1(f"{model_path} {stat.st_size} {stat.st_mtime_ns} {gallery.resolve()} "
                       f"{fingerprint(gallery)} flip={flip} faces={detection}"
                       .encode()).hexdigest()[:20]
    return cache_dir() / "gallery" / f"{key}.npz"


def load_gallery(model, model_path, gallery: Path, *, batch_size: int = 64, flip: bool = True,
                 use_cache: bool = True, faces=None) -> tuple[Gallery, bool]:
    """The gallery's templates, and whether they came from the cache; with ``faces`` (a
    FaceFinder) each image's face is detected and aligned first, and images without
    one are skipped."""
    from facekit.data.sources import load_index
    from facekit.eval.embedding import embed_faces, embed_paths

    cache = gallery_cache_path(model_path, gallery, flip, faces) if use_cache else None
    if use_cache and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as stored:
                return Gallery(stored["classes"].tolist(), stored["templates"],
                               int(stored["images"]),
                               [tuple(row) for row in stored["skipped"].tolist()]), True
        except Exception:  # a damaged cache counts as missing: embed again
            pass
    index = load_index(gallery)
    labels, skipped = index.labels, list(index.skipped)
    if faces is None:
        vectors = embed_paths(model, index.paths, batch_size=batch_size, flip=flip)
    else:
        vectors, missing = embed_faces(model, index.paths, faces, batch_size=batch_size,
                                       flip=flip)
        kept = np.array([i not in missing for i in range(len(index))], bool)
        skipped += [(index.paths[i], missing[i]) for i in sorted(missing)]
        vectors, labels = vectors[kept], labels[kept]
    vectors = l2_normalize(vectors)
    templates = np.zeros((len(index.classes), vectors.shape[1]), np.float64)
    np.add.at(templates, labels, vectors)
    present = np.bincount(labels, minlength=len(index.classes)) > 0
    classes = [name for name, shown in zip(index.classes, present) if shown]
    result = Gallery(classes, l2_normalize(templates[present]).astype(np.float32),
                     int(len(labels)), skipped)
    if use_cache:
        with unique_temporary(cache) as temporary:
            with open(temporary, "wb") as file:  # np.savez would add .npz to a path
                np.savez(file, classes=np.array(result.classes), templates=result.templates,
                         images=result.images,
                         skipped=np.array(result.skipped, dtype=str).reshape(-1, 2))
            os.replace(temporary, cache)
    return result, False


def similarities(gallery: Gallery, probes: np.ndarray) -> np.ndarray:
    """Cosine similarity of each probe (row) to each gallery identity (column)."""
    return l2_normalize(probes) @ gallery.templates.T


def rank_candidates(similarity: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """(identity ids, similarities) of each probe's ``top`` best candidates, best first."""
    top = min(top, similarity.shape[1])
    best = np.argsort(-similarity, axis=1, kind="stable")[:, :top]
    return best, np.take_along_axis(similarity, best, axis=1)


def true_ranks(gallery: Gallery, similarity: np.ndarray, identities: list[str]) -> np.ndarray:
    """The rank (1 = first) of each probe's own identity; 0 when the gallery lacks it."""
    position = {name: i for i, name in enumerate(gallery.classes)}
    ranks = np.zeros(len(identities), np.int64)
    for row, name in enumerate(identities):
        if name in position:
            own = similarity[row, position[name]]
            ranks[row] = 1 + int(np.sum(similarity[row] > own))
    return ranks


def rank_accuracy(ranks: np.ndarray) -> dict[int, float]:
    """Rank-k accuracy over the probes whose identity is in the gallery."""
    enrolled = ranks[ranks > 0]
    return {k: float(np.mean(enrolled <= k)) if len(enrolled) else float("nan") for k in RANKS}
