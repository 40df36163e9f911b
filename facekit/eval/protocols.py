"""Evaluation protocols behind one interface, with one result type.

A :class:`Protocol` names itself and evaluates a basic (embedding) model:
``evaluate(model, flip=..., batch_size=..., progress=...) -> Report``.  Every
report has a ``name``, a headline ``score`` (what ``eval/<name>`` logs after an
epoch and ``--best-by`` can pick), ``to_dict()`` for JSON and ``row()`` for the
table ``facekit eval`` prints.  The built-in protocols:

- :class:`Pairs`: 1:1 verification of image pairs with K-fold thresholds (LFW
  pairs files, insightface ``.bin`` sets, auto-drawn pairs, held-out people);
- :class:`IJB`: IJB-B/C template verification, TAR at FAR 1e-6 … 1e-1;
- :class:`Identification`: 1:N search of probes against a gallery, rank-k accuracy.

Adding a protocol is one class here (or in a module of its own) with ``name`` and
``evaluate``, and its report; ``facekit.evaluate``, the per-epoch callback and
the CLI's table take it as they are.  Light at import: TensorFlow loads when a
model is evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facekit.errors import FacekitError
from facekit.eval.sets import VerificationSet
from facekit.eval.verification import VerificationResult


@dataclass
class Report:
    """What a protocol measured.

    Attributes:
        name: the set's name as tables show it (``LFW``, ``IJBC``, ``gallery``).
        score: the headline figure (verification accuracy, TAR at FAR 1e-4, rank-1).
        kind: ``verification``, ``ijb`` or ``identification``.
    """

    name: str
    score: float
    kind: str

    def to_dict(self) -> dict:
        return {"set": self.name, "kind": self.kind, "score": self.score}

    def row(self) -> dict[str, str]:
        """Columns for the table of ``facekit eval``: header -> value."""
        return {"set": self.name, "score": f"{self.score:.4f}"}


@dataclass
class PairsReport(Report):
    result: VerificationResult = None
    distances: np.ndarray = None  # per pair, squared distance of unit embeddings
    issame: np.ndarray = None
    pair_keys: np.ndarray = None  # the same key for the same two images in any set
    undetected: list = field(default_factory=list)  # (path, reason): embedded whole

    def to_dict(self) -> dict:
        data = {"set": self.name, "kind": self.kind, **self.result.to_dict()}
        if self.undetected:
            data["undetected"] = [list(row) for row in self.undetected]
        return data

    def row(self) -> dict[str, str]:
        tar = self.result.tar_at_far.get("1e-03", {}).get("tar")
        return {"set": self.name, "pairs": str(self.result.pairs),
                "accuracy": f"{self.result.accuracy:.4f} ± {self.result.accuracy_std:.4f}",
                "AUC": f"{self.result.auc:.4f}",
                "TAR@FAR=1e-3": "not measured" if tar is None else f"{tar:.4f}"}


@dataclass
class IJBReport(Report):
    result: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": self.kind, **self.result}

    def row(self) -> dict[str, str]:
        return {"set": self.name, "pairs": str(self.result["pairs"]),
                **{f"TAR@FAR={far}": f"{tar:.4f}"
                   for far, tar in self.result["tar_at_far"].items()},
                "AUC": f"{self.result['auc']:.4f}"}


@dataclass
class IdentificationReport(Report):
    accuracy: dict = field(default_factory=dict)  # rank k -> accuracy
    table: object = None  # a pandas DataFrame: each probe's top matches
    gallery_identities: int = 0
    gallery_images: int = 0
    cached: bool = False
    probes: int = 0
    enrolled: int = 0
    skipped: list = field(default_factory=list)  # (path, reason): gallery and probe files
    detected: bool = False  # whether faces were detected and aligned first

    def to_dict(self) -> dict:
        return {"set": self.name, "kind": self.kind,
                "rank_accuracy": {str(k): v for k, v in self.accuracy.items()},
                "gallery": {"identities": self.gallery_identities,
                            "images": self.gallery_images},
                "probes": self.probes, "enrolled_probes": self.enrolled,
                "detected": self.detected, "skipped": [list(row) for row in self.skipped]}

    def row(self) -> dict[str, str]:
        return {"set": self.name, "probes": str(self.probes),
                **{f"rank-{k}": f"{v:.4f}" for k, v in self.accuracy.items()}}


class Protocol:
    """The interface of an evaluation protocol."""

    name: str = "protocol"

    def evaluate(self, model, *, flip: bool = True, batch_size: int = 64,
                 progress: bool = False) -> Report:
        """Evaluate a basic model (a keras.Model from raw [0, 255] RGB to embeddings)."""
        raise NotImplementedError


class Pairs(Protocol):
    """1:1 verification of the pairs of a :class:`VerificationSet`, K-fold.

    Args:
        vset: the set (``VerificationSet.from_pairs``, ``from_bin``, ``auto``,
            ``from_index``).
        folds: the number of folds (default: the set's own).

    Examples:
        >>> lfw = Pairs(VerificationSet.from_bin("lfw.bin"))
        >>> facekit.evaluate("runs/a", [lfw]).reports[0].score  # accuracy
    """

    def __init__(self, vset: VerificationSet, folds: int | None = None, faces=None):
        if faces is not None and vset.encoded:
            raise FacekitError(f"'{vset.name}' holds aligned faces; face detection is for "
                               "sets of photos.")
        self.vset, self.folds, self.faces, self.name = vset, folds, faces, vset.name

    @classmethod
    def from_pairs(cls, data, pairs, folds: int | None = None, faces=None) -> "Pairs":
        """The pairs of an LFW-style pairs file over ``data``; ``faces`` (a
        facekit.data.detect.FaceFinder) detects and aligns each photo first."""
        return cls(VerificationSet.from_pairs(data, pairs), folds, faces)

    @classmethod
    def from_bin(cls, path, folds: int | None = None) -> "Pairs":
        return cls(VerificationSet.from_bin(path, folds or 10), folds)

    def evaluate(self, model, *, flip=True, batch_size=64, progress=False) -> PairsReport:
        from facekit.eval.sets import embed_set, verify_set

        embeddings, undetected = embed_set(model, self.vset, flip=flip, batch_size=batch_size,
                                           progress=progress, faces=self.faces)
        result, distances = verify_set(embeddings, self.vset, self.folds)
        return PairsReport(self.vset.title, result.accuracy, "verification", result,
                           distances, self.vset.issame, self.vset.pair_keys(), undetected)


class IJB(Protocol):
    """IJB-B/IJB-C 1:1 template verification, as insightface's ``eval_ijbc.py``.

    Args:
        folder: the protocol folder (``loose_crop/`` and ``meta/``), read at once so a
            bad folder is refused before any model loads.
        detector_score: weight each image by its detector score (insightface's N1D1F1).
    """

    def __init__(self, folder, detector_score: bool = True):
        from facekit.eval.ijb import IJBProtocol

        self.protocol = IJBProtocol.read(folder)
        self.detector_score, self.name = detector_score, self.protocol.name

    def evaluate(self, model, *, flip=True, batch_size=64, progress=False) -> IJBReport:
        from facekit.eval.ijb import evaluate_ijb

        result = evaluate_ijb(model, self.protocol, detector_score=self.detector_score,
                              flip=flip, batch_size=batch_size, progress=progress)
        return IJBReport(self.name, result["tar_at_far"]["1e-04"], "ijb", result)


class Identification(Protocol):
    """1:N identification: each probe image ranked against a gallery of identities.

    Args:
        gallery: an identity folder (or any indexed format): the people searched among.
        probe: an identity folder whose folder names are the truth for rank-k accuracy.
        top: candidates listed per probe.
        cache_key: the model file whose gallery embeddings may be cached, or None.
        faces: a facekit.data.detect.FaceFinder to detect and align the faces with.
        detect: True to detect, False not to, None (with ``faces``) to detect when an
            image is not of the model's input size; images without a face are skipped.
    """

    def __init__(self, gallery, probe, top: int = 5, cache_key=None, faces=None,
                 detect: bool | None = None):
        if top < 1:
            raise FacekitError(f"--top must be at least 1, got {top}.")
        self.gallery, self.probe, self.top = Path(gallery), Path(probe), top
        self.cache_key, self.name = cache_key, Path(gallery).name
        self.faces, self.detect = faces, detect if faces is not None else False

    def evaluate(self, model, *, flip=True, batch_size=64, progress=False
                 ) -> IdentificationReport:
        import pandas as pd

        from facekit.data.sources import load_index
        from facekit.eval.embedding import (embed_faces, embed_paths, model_image_size,
                                            photo_sizes_differ)
        from facekit.eval.identify import (load_gallery, rank_accuracy, rank_candidates,
                                           similarities, true_ranks)

        probes = load_index(self.probe)
        detect = self.detect
        if detect is None:
            detect = photo_sizes_differ(list(load_index(self.gallery).paths) + list(probes.paths),
                                        model_image_size(model))
        faces = self.faces if detect else None
        known, cached = load_gallery(model, self.cache_key, self.gallery,
                                     batch_size=batch_size, flip=flip,
                                     use_cache=self.cache_key is not None, faces=faces)
        paths, labels, skipped = probes.paths, probes.labels, list(probes.skipped)
        if faces is None:
            vectors = embed_paths(model, paths, batch_size=batch_size, flip=flip)
        else:
            vectors, missing = embed_faces(model, paths, faces, batch_size=batch_size,
                                           flip=flip)
            kept = np.array([i not in missing for i in range(len(paths))], bool)
            skipped += [(paths[i], missing[i]) for i in sorted(missing)]
            paths, labels, vectors = paths[kept], labels[kept], vectors[kept]
        identities = [probes.classes[label] for label in labels]
        similarity = similarities(known, vectors)
        best, scores = rank_candidates(similarity, self.top)
        ranks = true_ranks(known, similarity, identities)
        table = pd.DataFrame({"probe": paths, "identity": identities,
                              "rank": pd.Series(ranks).where(ranks > 0).astype("Int64")})
        for k in range(best.shape[1]):
            table[f"match{k + 1}"] = [known.classes[i] for i in best[:, k]]
            table[f"similarity{k + 1}"] = np.round(scores[:, k], 6)
        accuracy = rank_accuracy(ranks)
        return IdentificationReport(self.name, accuracy[1], "identification", accuracy, table,
                                    len(known.classes), known.images, cached, len(ranks),
                                    int((ranks > 0).sum()), known.skipped + skipped,
                                    faces is not None)


def table(reports: list[Report]) -> str:
    """One line per report, the columns of the first of each kind."""
    lines = []
    for kind in dict.fromkeys(report.kind for report in reports):
        rows = [report.row() for report in reports if report.kind == kind]
        headers = list(rows[0])
        widths = [max(len(h), *(len(row.get(h, "")) for row in rows)) + 2 for h in headers]
        widths[0] = max(widths[0], 12)
        lines.append(headers[0].ljust(widths[0]) + "".join(
            h.rjust(w) for h, w in zip(headers[1:], widths[1:])))
        for row in rows:
            lines.append(row[headers[0]].ljust(widths[0]) + "".join(
                row.get(h, "").rjust(w) for h, w in zip(headers[1:], widths[1:])))
        lines.append("")
    return "\n".join(lines).rstrip()
