"""Validation splits of an index: some images of every identity, or whole identities."""

from __future__ import annotations

import numpy as np
import pandas as pd

from facekit.data.index import DatasetIndex
from facekit.errors import OptionError


def split_index(index: DatasetIndex, val_split: float, seed: int
                ) -> tuple[DatasetIndex, DatasetIndex | None]:
    """Hold out ``val_split`` of each identity's images (never its last one), per seed."""
    if val_split <= 0:
        return index, None
    order = np.random.default_rng(seed).permutation(len(index))
    shuffled = pd.Series(index.labels[order])
    rank = shuffled.groupby(shuffled).cumcount().to_numpy()
    count = shuffled.groupby(shuffled).transform("size").to_numpy()
    n_val = np.minimum(np.floor(count * val_split + 0.5), count - 1)
    is_val = np.zeros(len(index), dtype=bool)
    is_val[order] = rank < n_val
    if not is_val.any():
        return index, None
    return index.subset(~is_val), index.subset(is_val)


def split_identities(index: DatasetIndex, val_split: float, seed: int
                     ) -> tuple[DatasetIndex, DatasetIndex | None]:
    """Hold out ``val_split`` of the identities with all their images (open-set).

    Both parts get their own class ids 0..n-1; the held-out identities are for
    verification, which never needs their ids.
    """
    if val_split <= 0:
        return index, None
    classes = len(index.classes)
    held = max(2, int(round(classes * val_split)))
    if classes - held < 2:
        raise OptionError("{split_by} identities needs at least 4 identities for a "
                          "{val_split} of {fraction}; the data has {classes}.",
                          fraction=val_split, classes=classes)
    chosen = np.zeros(classes, dtype=bool)
    chosen[np.random.default_rng(seed).permutation(classes)[:held]] = True
    if index.counts()[chosen].max() < 2:
        raise OptionError("The held-out identities have one image each, so no same-identity "
                          "pair can be drawn; use {split_by} images or more data.")
    return _only_classes(index, ~chosen), _only_classes(index, chosen)


def _only_classes(index: DatasetIndex, keep: np.ndarray) -> DatasetIndex:
    remap = np.cumsum(keep) - 1
    mask = keep[index.labels]
    return DatasetIndex(index.paths[mask], remap[index.labels[mask]].astype(np.int32),
                        [name for name, k in zip(index.classes, keep) if k])
