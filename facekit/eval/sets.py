"""Verification sets (pairs files, auto-drawn pairs, insightface .bin) and their evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facekit.errors import FacekitError
from facekit.eval.verification import VerificationResult, evaluate_embeddings

# How the field names insightface's verification sets (by file stem).
BIN_NAMES = {"lfw": "LFW", "cfp_fp": "CFP-FP", "cfp_ff": "CFP-FF", "agedb_30": "AgeDB-30",
             "calfw": "CALFW", "cplfw": "CPLFW", "vgg2_fp": "VGG2-FP"}


def bin_files(paths) -> list[Path]:
    """The ``.bin`` files named, a folder standing for every ``.bin`` in it."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(path.glob("*.bin"))
            if not found:
                raise FacekitError(f"The folder '{path}' holds no .bin verification sets.")
            files += found
        else:
            files.append(path)
    return files


@dataclass
class VerificationSet:
    """Unique images plus, per pair, the positions of its two images and whether they match."""

    name: str
    images: list  # file paths, or encoded bytes for .bin sets
    first: np.ndarray
    second: np.ndarray
    issame: np.ndarray
    folds: int
    encoded: bool = False

    def pair_keys(self) -> np.ndarray:
        """One key per pair, the same for the same two images in any set or order: the
        images' content hashes (encoded sets) or real paths."""
        import hashlib
        import os

        if self.encoded:
            names = [hashlib.sha1(image).hexdigest() for image in self.images]
        else:
            names = [os.path.realpath(path) for path in self.images]
        return np.array(["|".join(sorted((names[a], names[b])))
                         for a, b in zip(self.first, self.second)])

    @property
    def title(self) -> str:
        """The name tables show: the field's spelling for insightface's sets."""
        return BIN_NAMES.get(self.name, self.name) if self.encoded else self.name

    @classmethod
    def from_pairs(cls, data_dir, pairs_file, name: str | None = None) -> "VerificationSet":
        from facekit.eval.pairs import read_pairs, resolve_images

        pair_list = read_pairs(pairs_file)
        paths, first, second = resolve_images(data_dir, pair_list)
        return cls(name or Path(pairs_file).stem, paths, first, second, pair_list.issame,
                   pair_list.folds)

    @classmethod
    def from_index(cls, index, count: int, folds: int, seed: int, name: str
                   ) -> "VerificationSet":
        """Pairs drawn from an index in memory (the held-out identities of a run)."""
        from facekit.eval.pairs import draw_pairs

        pair_list = draw_pairs(index, count, folds, seed)
        starts = np.concatenate([[0], np.cumsum(index.counts())])
        order = np.argsort(index.labels, kind="stable")  # images grouped by identity
        position = {c: i for i, c in enumerate(index.classes)}

        def locate(identity, number):
            return order[starts[position[identity]] + number - 1]

        first = np.array([locate(a, i) for a, i, _, _ in pair_list.pairs])
        second = np.array([locate(b, j) for _, _, b, j in pair_list.pairs])
        return cls(name, list(index.paths), first, second, pair_list.issame, folds)

    @classmethod
    def auto(cls, data_dir, count: int, folds: int, seed: int, pairs_out) -> "VerificationSet":
        """Draw pairs from an identity folder and write them, so the result can be reproduced."""
        from facekit.data.sources import load_index
        from facekit.eval.pairs import draw_pairs, write_pairs

        write_pairs(pairs_out, draw_pairs(load_index(data_dir), count, folds, seed))
        return cls.from_pairs(data_dir, pairs_out, name=Path(data_dir).name)

    @classmethod
    def from_bin(cls, path, folds: int = 10) -> "VerificationSet":
        """An insightface verification ``.bin`` (read safely: facekit.eval.binfile).

        Image 2k and 2k+1 form pair k, in fold order.
        """
        from facekit.eval.binfile import read_bin

        path = Path(path)
        images, issame = read_bin(path)
        pairs = np.arange(len(issame))
        return cls(path.stem, images, 2 * pairs, 2 * pairs + 1, issame, folds, encoded=True)


def evaluate_set(model, vset: VerificationSet, *, flip: bool = True, batch_size: int = 64,
                 folds: int | None = None, progress: bool = False
                 ) -> tuple[VerificationResult, np.ndarray]:
    """Embed the set's images once and run the K-fold protocol; returns result and distances."""
    embeddings, _ = embed_set(model, vset, flip=flip, batch_size=batch_size, progress=progress)
    return verify_set(embeddings, vset, folds)


def embed_set(model, vset: VerificationSet, *, flip: bool = True, batch_size: int = 64,
              progress: bool = False, faces=None) -> tuple[np.ndarray, list]:
    """The embedding of each image of the set, and the (path, reason) of the images
    ``faces`` (a facekit.data.detect.FaceFinder, for sets of photos) found no face in:
    those are embedded whole, so that every pair is still verified."""
    from facekit.eval.embedding import embed_encoded, embed_faces, embed_paths

    if vset.encoded:
        if faces is not None:
            raise FacekitError(f"'{vset.name}' holds aligned faces; face detection is for "
                               "sets of photos.")
        return embed_encoded(model, vset.images, batch_size=batch_size, flip=flip,
                             progress=progress, source=f"'{vset.name}'"), []
    if faces is None:
        return embed_paths(model, vset.images, batch_size=batch_size, flip=flip,
                           progress=progress), []
    embeddings, missing = embed_faces(model, vset.images, faces, batch_size=batch_size,
                                      flip=flip, progress=progress)
    if missing:
        positions = sorted(missing)
        embeddings[positions] = embed_paths(model, [vset.images[i] for i in positions],
                                            batch_size=batch_size, flip=flip)
    return embeddings, [(vset.images[i], missing[i]) for i in sorted(missing)]


def verify_set(embeddings: np.ndarray, vset: VerificationSet, folds: int | None = None
               ) -> tuple[VerificationResult, np.ndarray]:
    """The K-fold protocol on the set's pairs; returns the result and the distances."""
    from facekit.eval.verification import pair_distances

    folds = folds or vset.folds
    if len(vset.issame) < folds:
        raise FacekitError(f"{len(vset.issame)} pairs cannot be split into {folds} folds.")
    result = evaluate_embeddings(embeddings[vset.first], embeddings[vset.second],
                                 vset.issame, folds)
    return result, pair_distances(embeddings[vset.first], embeddings[vset.second])
