"""Identity folders to tf.data: scan, split, decode, batch, augment.

Images stay uint8 through the pipeline (a quarter of float32's bytes); the
model's own preprocessing layer rescales them on the accelerator.  Flipping
runs on whole batches, not per image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from facekit.errors import FacekitError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclass
class DatasetIndex:
    """Every image of a folder with its class id; ``classes[id]`` is the folder name."""

    paths: np.ndarray  # str
    labels: np.ndarray  # int32
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, mask: np.ndarray) -> "DatasetIndex":
        return DatasetIndex(self.paths[mask], self.labels[mask], self.classes)


def scan_folder(root: str | Path) -> DatasetIndex:
    """Index ``root/<identity>/<image>``; identities in sorted order get ids 0..n-1."""
    root = Path(root)
    if not root.is_dir():
        raise FacekitError(f"The data folder '{root}' does not exist; pass --data with a "
                           "folder of identity sub-folders (or omit it to use the demo data).")
    classes = sorted(entry.name for entry in os.scandir(root)
                     if entry.is_dir() and not entry.name.startswith("."))
    paths, labels = [], []
    for class_id, name in enumerate(classes):
        for entry in sorted(os.scandir(root / name), key=lambda e: e.name):
            if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS):
                paths.append(entry.path)
                labels.append(class_id)
    if not paths:
        raise FacekitError(f"The data folder '{root}' holds no images in identity "
                           "sub-folders; expected DATA/<identity>/<image>.jpg.")
    return DatasetIndex(np.array(paths), np.array(labels, dtype=np.int32), classes)


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


def make_dataset(index: DatasetIndex, *, image_size: int, batch_size: int, training: bool,
                 seed: int = 0, flip: bool = True, skip_unreadable: bool = True):
    """A batched, prefetched dataset of (uint8 images, int32 labels).

    Training data is shuffled each epoch, repeated, batched with a fixed batch
    size and randomly flipped; evaluation data is read once, in order.  With
    ``skip_unreadable`` a file that fails to decode is dropped, not fatal;
    embedding needs every image, so it turns that off.
    """
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((index.paths, index.labels))
    if training:
        dataset = dataset.shuffle(len(index), seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = dataset.map(lambda path, label: (load_image(path, image_size), label),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    if skip_unreadable:
        dataset = dataset.ignore_errors()
    dataset = dataset.batch(batch_size, drop_remainder=training,
                            num_parallel_calls=tf.data.AUTOTUNE)
    if training and flip:
        dataset = dataset.map(random_flip_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def load_image(path, image_size: int):
    """Decode any JPEG/PNG/BMP/GIF file to uint8 RGB of ``image_size``² pixels."""
    import tensorflow as tf

    return decode_image(tf.io.read_file(path), image_size)


def decode_image(contents, image_size: int):
    """Decode encoded image bytes to uint8 RGB, resized to ``image_size``² when needed."""
    import tensorflow as tf

    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    size = tf.constant([image_size, image_size])
    image = tf.cond(
        tf.reduce_all(tf.shape(image)[:2] == size),
        lambda: image,
        lambda: tf.cast(tf.clip_by_value(
            tf.round(tf.image.resize(image, size, antialias=True)), 0, 255), tf.uint8))
    return tf.ensure_shape(image, (image_size, image_size, 3))


def random_flip_batch(images, labels):
    """Mirror a random half of the batch left-right (one op for the whole batch)."""
    import tensorflow as tf

    flip = tf.random.uniform([tf.shape(images)[0], 1, 1, 1]) < 0.5
    return tf.where(flip, tf.reverse(images, axis=[2]), images), labels
