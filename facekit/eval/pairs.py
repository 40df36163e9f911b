"""Verification pair lists in the LFW ``pairs.txt`` format.

The first line is ``folds<TAB>n``; then each fold has n same-person lines
``name<TAB>i<TAB>j`` followed by n different-person lines
``name1<TAB>i<TAB>name2<TAB>j``.  Image ``i`` of ``name`` is
``name/name_{i:04d}.<ext>`` as in LFW, or, for folders not named that way,
the i-th image (from 1) of ``name/`` in sorted order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facekit.data.index import IMAGE_EXTENSIONS, DatasetIndex
from facekit.errors import FacekitError
from facekit.files import read_text


@dataclass
class PairList:
    folds: int
    pairs: list[tuple[str, int, str, int]]  # (name1, i, name2, j)
    issame: np.ndarray  # bool, one per pair


def read_pairs(path: str | Path) -> PairList:
    path = Path(path)
    if not path.is_file():
        raise FacekitError(f"The pairs file '{path}' does not exist.")
    lines = [line.split() for line in read_text(path, "The pairs file").splitlines() if line.strip()]
    try:
        folds = int(lines[0][0])
        pairs, issame = [], []
        for fields in lines[1:]:
            if len(fields) == 3:
                pairs.append((fields[0], int(fields[1]), fields[0], int(fields[2])))
                issame.append(True)
            elif len(fields) == 4:
                pairs.append((fields[0], int(fields[1]), fields[2], int(fields[3])))
                issame.append(False)
            else:
                raise ValueError(" ".join(fields))
    except (ValueError, IndexError) as exc:
        raise FacekitError(f"'{path}' is not in the LFW pairs.txt format (bad line: {exc}); "
                           "expected 'name i j' or 'name1 i name2 j' lines.") from None
    if not pairs or folds < 2:
        raise FacekitError(f"'{path}' holds no pairs or fewer than 2 folds.")
    return PairList(folds, pairs, np.array(issame))


def write_pairs(path: str | Path, pair_list: PairList) -> None:
    """Write in LFW order: per fold, the same pairs, then the different ones."""
    same = [p for p, s in zip(pair_list.pairs, pair_list.issame) if s]
    different = [p for p, s in zip(pair_list.pairs, pair_list.issame) if not s]
    per_fold = len(same) // pair_list.folds
    lines = [f"{pair_list.folds}\t{per_fold}"]
    for fold in range(pair_list.folds):
        part = slice(fold * per_fold, (fold + 1) * per_fold)
        lines += [f"{a}\t{i}\t{j}" for a, i, _, j in same[part]]
        lines += [f"{a}\t{i}\t{b}\t{j}" for a, i, b, j in different[part]]
    Path(path).write_text("\n".join(lines) + "\n")


def draw_pairs(index: DatasetIndex, count: int, folds: int, seed: int) -> PairList:
    """``count`` distinct pairs, half same and half different identity, in LFW fold order."""
    if count % (2 * folds):
        raise FacekitError(f"--auto-pairs {count} must be a multiple of 2 x {folds} folds "
                           f"(same and different pairs in every fold); try "
                           f"{max(2 * folds, count - count % (2 * folds))}.")
    rng = np.random.default_rng(seed)
    counts = np.bincount(index.labels, minlength=len(index.classes))
    multi = np.flatnonzero(counts >= 2)
    present = np.flatnonzero(counts >= 1)
    if len(multi) == 0 or len(present) < 2:
        raise FacekitError("Drawing pairs needs an identity with 2+ images and at least "
                           "2 identities.")
    per_fold = count // (2 * folds)
    same_available = int(sum(n * (n - 1) // 2 for n in counts.tolist()))
    if count // 2 > same_available:
        raise FacekitError(f"--auto-pairs {count} needs {count // 2} distinct same-person "
                           f"pairs; the data holds {same_available}: ask for at most "
                           f"{same_available * 2 // (2 * folds) * 2 * folds}.")
    seen: set = set()

    def distinct(draw):
        """A pair not drawn before (in either order)."""
        for _ in range(1000):
            a, i, b, j = draw()
            key = tuple(sorted(((a, i), (b, j))))
            if key not in seen:
                seen.add(key)
                return a, i, b, j
        raise FacekitError(f"Could not draw {count} distinct pairs from the data; ask for "
                           "fewer with --auto-pairs.")

    def same():
        c = int(rng.choice(multi))
        i, j = rng.choice(counts[c], size=2, replace=False) + 1
        return index.classes[c], int(i), index.classes[c], int(j)

    def different():
        a, b = rng.choice(present, size=2, replace=False)
        return (index.classes[a], int(rng.integers(counts[a])) + 1,
                index.classes[b], int(rng.integers(counts[b])) + 1)

    pairs, issame = [], []
    for _ in range(folds):
        pairs += [distinct(same) for _ in range(per_fold)]
        pairs += [distinct(different) for _ in range(per_fold)]
        issame += [True] * per_fold + [False] * per_fold
    return PairList(folds, pairs, np.array(issame))


def resolve_images(data_dir: str | Path, pair_list: PairList):
    """Unique image paths and, per pair, the positions of its two images in that list."""
    data_dir = Path(data_dir)
    listings: dict[str, list[str]] = {}
    positions: dict[str, int] = {}
    paths: list[str] = []

    def locate(name: str, number: int) -> int:
        path = _image_path(data_dir, name, number, listings)
        if path not in positions:
            positions[path] = len(paths)
            paths.append(path)
        return positions[path]

    first = np.array([locate(a, i) for a, i, _, _ in pair_list.pairs])
    second = np.array([locate(b, j) for _, _, b, j in pair_list.pairs])
    return paths, first, second


def _image_path(data_dir: Path, name: str, number: int, listings) -> str:
    folder = data_dir / name
    for ext in (".jpg", ".png", ".jpeg", ".bmp", ".gif"):
        candidate = folder / f"{name}_{number:04d}{ext}"
        if candidate.is_file():
            return str(candidate)
    if name not in listings:
        listings[name] = sorted(e.name for e in os.scandir(folder)
                                if e.name.lower().endswith(IMAGE_EXTENSIONS)) \
            if folder.is_dir() else []
    if 1 <= number <= len(listings[name]):
        return str(folder / listings[name][number - 1])
    raise FacekitError(f"Image {number} of '{name}' is not in '{data_dir}' (looked for "
                       f"{folder / f'{name}_{number:04d}.jpg'}); check --data and the pairs file.")
