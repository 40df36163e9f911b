"""Readers: how the images of an index are read, whatever holds them.

A :class:`DatasetIndex` lists *items* (file paths, byte offsets into a ``.rec``,
...) with their labels, and names the reader that turns an item into an encoded
image.  A reader answers four questions, and that is all the rest of facekit
asks of a format:

- ``encoded(item)``: the item's encoded image bytes (packing, preparing);
- ``name(item)``: how a message names it;
- ``loader(image_size)``: a TensorFlow function from a batch of items to decoded
  uint8 RGB images (training, embedding);
- ``verify(items)``: ``{item: reason}`` for the items whose image does not decode.

This module holds the reader of image files; ``facekit.data.recordio`` holds the
``.rec`` reader.  Readers are small and picklable (``facekit prepare`` hands them
to worker processes).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class FileReader:
    """Items are image file paths."""

    def __repr__(self) -> str:
        return "FileReader()"

    def __eq__(self, other) -> bool:
        return isinstance(other, FileReader)

    def __hash__(self) -> int:
        return hash(FileReader)

    def encoded(self, item) -> bytes:
        return Path(item).read_bytes()

    def name(self, item) -> str:
        return str(item)

    def loader(self, image_size: int):
        from facekit.data.pipeline import decode_batch

        return lambda paths: decode_batch(paths, image_size, read=True)

    def verify(self, items) -> dict:
        """Decode every file as training will, in parallel (tf.data); the failures are
        the paths missing from the output of ``ignore_errors``."""
        import tensorflow as tf

        def check(path):
            image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                                       expand_animations=False)
            return path, tf.shape(image)  # using the image keeps the decode from being pruned

        dataset = (tf.data.Dataset.from_tensor_slices(np.asarray(items, dtype=str))
                   .map(check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
                   .ignore_errors().batch(4096))
        good = {p.decode() for batch, _ in dataset.as_numpy_iterator() for p in batch}
        return {p: failure_reason(p) for p in items if p not in good}


FILES = FileReader()


def failure_reason(path: str) -> str:
    """Why an image file failed to decode, in words the user can act on."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    if size == 0:
        return "empty file (0 bytes): remove it or copy it again"
    if not (head.startswith((b"\xff\xd8", b"\x89PNG", b"BM", b"GIF8"))):
        return "not an image file (unknown content): remove it"
    return "corrupt or truncated image: remove it or copy it again"
