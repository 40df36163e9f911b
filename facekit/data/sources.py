"""Data sources: where training images come from, behind one small interface.

``open_source(path)`` is the one place that decides which format a path holds;
training, ``index``, ``prepare``, ``embed``, ``identify``, ``eval --auto-pairs``
and ``pack`` all go through it.  A source is opened when the run is planned
(cheap: which format, does it exist, can it do what the options ask) and loaded
when the run starts (its index, its validation split).  It then answers how many
images and classes there are, refuses a cluster it cannot share its data with,
and gives the ``tf.data`` datasets of one worker.  A format that can list its
images gives an index (``DatasetIndex``: items, labels, classes and the reader of
its items, facekit.data.readers), which is all the other commands need.

Adding a format is one module (its reader and a way to index it, as
facekit.data.recordio does for ``.rec``) and one ``DataSource`` subclass added to
``SOURCES``: an ``IndexedSource`` needs only ``accepts`` and ``index``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facekit.data.index import DatasetIndex, folder_index, is_pattern, require_folder
from facekit.data.recordio import IDX_FILE, REC_FILE, is_recordio, recordio_index
from facekit.data.shards import is_packed, read_meta, record_bucket
from facekit.data.split import split_identities, split_index
from facekit.errors import FacekitError, OptionError


class DataSource:
    """The interface every format implements; what ``load`` fills in is below.

    Args:
        path: what the user named (``--data``).
        val_split: the fraction held out for validation.
        split_by: ``images`` (some images of every identity) or ``identities``.
        seed: the split's seed.
        class_balance: the power of class-balanced sampling (0: none).
        labelled: whether the images' identities are used (``--no-labels``: not; a
            folder then lists every image, in identity sub-folders or not).
    """

    def __init__(self, path: Path, *, val_split: float = 0.0, split_by: str = "images",
                 seed: int = 0, class_balance: float = 0.0, labelled: bool = True):
        self.path, self.val_split, self.split_by, self.seed = path, val_split, split_by, seed
        self.class_balance, self.labelled = class_balance, labelled
        # Known once loaded:
        self.classes: list[str] = []
        self.train_images = self.val_images = 0
        self.summary = ""
        self.skipped: list = []  # (path, reason) of unusable images
        self.held_out = None  # a DatasetIndex of held-out identities (--split-by identities)

    @staticmethod
    def accepts(path: Path) -> bool:
        """Whether ``path`` is data of this format."""
        raise NotImplementedError

    def index(self, *, use_cache: bool = True, verify: bool = True) -> DatasetIndex:
        """Every image with its identity (cached; ``verify`` decodes each to find the
        broken ones)."""
        raise FacekitError(f"'{self.path}' is {self.description}, which is read as a stream "
                           "for training only; use the folder or .rec it was made from.")

    description = "data"

    def load(self) -> None:
        """Index and split the data (may use TensorFlow to check images)."""
        raise NotImplementedError

    def check_workers(self, workers: int, batch_size: int) -> None:
        """Refuse, in one sentence, a cluster whose workers cannot each get a share."""

    def datasets(self, image_size: int, batch_size: int, *, seed: int, skip_batches: int = 0,
                 deterministic: bool = False, workers: int = 1, worker: int = 0,
                 dropped=None):
        """(training dataset, validation dataset or None) of (uint8 images, int32 labels);
        with several ``workers``, the share of ``worker``; ``dropped`` (a
        facekit.data.pipeline.DroppedBatches) counts the training batches that could
        not be read."""
        raise NotImplementedError


class IndexedSource(DataSource):
    """A format whose images can be listed: loaded, split and fed through its index."""

    def load(self) -> None:
        index = self.index()
        self.summary, self.skipped = index.summary(), index.skipped
        if not self.labelled:
            self.summary = "\n".join([f"{len(index)} images, without labels (the teacher's "
                                      "embeddings are the targets)",
                                      *self.summary.splitlines()[1:]])
        if self.split_by == "identities":
            self.train, self.held_out = split_identities(index, self.val_split, self.seed)
            self.val = None
        else:
            self.train, self.val = split_index(index, self.val_split, self.seed)
            singles = int((index.counts() == 1).sum())
            if self.val is not None and singles:
                self.summary += (f"\n{singles} identities have a single image: they are "
                                 "trained on but have none held out for validation")
        self.classes = self.train.classes
        if len(self.classes) < 2 and self.labelled:
            raise FacekitError(f"'{self.path}' holds {len(self.classes)} identity to train on; "
                               "a face model learns to tell identities apart, so it needs at "
                               "least 2.")
        self.train_images = len(self.train)
        self.val_images = 0 if self.val is None else len(self.val)

    def check_workers(self, workers: int, batch_size: int) -> None:
        if self.train_images < batch_size * workers:
            raise OptionError(f"{self.train_images} training images are too few to give each "
                              f"of {workers} workers a full batch; lower {{batch_size}}.")

    def datasets(self, image_size: int, batch_size: int, *, seed: int, skip_batches: int = 0,
                 deterministic: bool = False, workers: int = 1, worker: int = 0,
                 dropped=None):
        from facekit.data.pipeline import make_dataset

        share = dict(image_size=image_size, batch_size=batch_size, num_workers=workers,
                     worker_index=worker)
        train = make_dataset(self.train, training=True, seed=seed, skip_batches=skip_batches,
                             deterministic=deterministic, class_balance=self.class_balance,
                             dropped=dropped, **share)
        val = None if self.val is None else make_dataset(self.val, training=False, **share)
        return train, val


class FolderSource(IndexedSource):
    """DATA/<identity>/<image> folders, or a glob2 pattern of such files."""

    description = "an image folder"

    @staticmethod
    def accepts(path: Path) -> bool:
        return True  # the fallback: what is not another format must be a folder

    def __init__(self, path: Path, **split):
        super().__init__(path, **split)
        if not is_pattern(path):
            require_folder(path)  # a user mistake: say so before TensorFlow starts

    def index(self, *, use_cache: bool = True, verify: bool = True) -> DatasetIndex:
        return folder_index(self.path, use_cache=use_cache, verify=verify,
                            labelled=self.labelled)


class RecordIOSource(IndexedSource):
    """insightface's ``train.rec`` + ``train.idx`` (facekit.data.recordio), read without
    MXNet; indexed, split and fed like a folder, each batch read from the memory map."""

    description = "an insightface .rec folder"

    @staticmethod
    def accepts(path: Path) -> bool:
        return not is_pattern(path) and is_recordio(path)

    def __init__(self, path: Path, **split):
        super().__init__(path, **split)
        if not (path / IDX_FILE).is_file():
            raise FacekitError(f"'{path / REC_FILE}' has no {IDX_FILE} beside it; copy the "
                               "index that came with the .rec (key<TAB>offset per record).")

    def index(self, *, use_cache: bool = True, verify: bool = True) -> DatasetIndex:
        return recordio_index(self.path, use_cache=use_cache, verify=verify)


class ShardSource(DataSource):
    """TFRecord shards written by ``facekit pack``; the validation split is a fixed
    pseudo-random subset of record ids, so it is the same on every worker and run."""

    description = "packed TFRecord shards"

    @staticmethod
    def accepts(path: Path) -> bool:
        return not is_pattern(path) and is_packed(path)

    def __init__(self, path: Path, **split):
        super().__init__(path, **split)
        if self.split_by == "identities":
            raise OptionError("{split_by} identities is not available for packed shards; use "
                              "{split_by} images, or evaluate held-out people with "
                              "{eval_pairs}/{eval_bins}.")
        if self.class_balance:
            raise OptionError("{class_balance} is not available for packed shards, which "
                              "are read as a stream; train on the image folder or the "
                              ".rec it was packed from.")

    def load(self) -> None:
        self.meta = meta = read_meta(self.path)
        self.permille = int(round(self.val_split * 1000))
        ids = np.arange(meta["images"], dtype=np.int64)
        self.val_images = int(np.sum(record_bucket(ids) < self.permille))
        self.train_images = meta["images"] - self.val_images
        self.classes, self.shard_files = meta["classes"], len(meta["shards"])
        self.summary = (f"{meta['images']} packed images of {len(self.classes)} identities in "
                        f"{self.shard_files} shard(s)")

    def check_workers(self, workers: int, batch_size: int) -> None:
        if self.shard_files < workers:
            raise FacekitError(f"The packed data has {self.shard_files} shard(s) for {workers} "
                               "workers, and each worker reads whole shards; pack it again "
                               "with a smaller --images-per-shard.")

    def datasets(self, image_size: int, batch_size: int, *, seed: int, skip_batches: int = 0,
                 deterministic: bool = False, workers: int = 1, worker: int = 0,
                 dropped=None):
        from facekit.data.shards import shard_dataset

        permille = self.permille
        share = dict(image_size=image_size, batch_size=batch_size, num_workers=workers,
                     worker_index=worker, meta=self.meta)
        train = shard_dataset(self.path, training=True, seed=seed,
                              keep=lambda ids: record_bucket(ids) >= permille,
                              skip_batches=skip_batches, deterministic=deterministic,
                              dropped=dropped, **share)
        val = None if not self.val_images else shard_dataset(
            self.path, training=False, keep=lambda ids: record_bucket(ids) < permille, **share)
        return train, val


SOURCES = (ShardSource, RecordIOSource, FolderSource)  # the first that accepts a path reads it


def open_source(path: str | Path, **split) -> DataSource:
    """The source that reads ``path``, checked for what it can be asked without TensorFlow.

    Args:
        path: an identity folder, a glob2 pattern, a folder of packed shards or of
            insightface's train.rec.
        **split: the ``DataSource`` arguments (validation split, seed, sampling).

    Examples:
        >>> source = open_source("faces/")
        >>> index = source.index()  # every readable image, with its identity
    """
    path = Path(path)
    kind = next(source for source in SOURCES if source.accepts(path))
    return kind(path, **split)


def load_index(path: str | Path, *, use_cache: bool = True, verify: bool = True
               ) -> DatasetIndex:
    """The index of whatever ``path`` holds (``open_source(path).index()``)."""
    return open_source(path).index(use_cache=use_cache, verify=verify)
