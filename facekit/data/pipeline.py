"""The input pipeline: feed an index through tf.data, decoding whole batches.

The CPU only reads and decodes: images stay uint8 (a quarter of float32's
bytes), and rescaling and augmentation are layers of the training model that
run on the accelerator on whole batches (see facekit.data.augment).
"""

from __future__ import annotations

import itertools
import threading

def make_dataset(index, *, image_size: int, batch_size: int, training: bool,
                 seed: int = 0, skip_unreadable: bool = True, skip_batches: int = 0,
                 deterministic: bool = False, num_workers: int = 1, worker_index: int = 0,
                 class_balance: float = 0.0, dropped: DroppedBatches | None = None):
    """A batched, prefetched dataset of (uint8 images, int32 labels) from ``index`` (a
    facekit.data.index.DatasetIndex of any format: its reader loads each batch).

    Training data is shuffled each epoch, repeated and batched with a fixed
    batch size; evaluation data is read once, in order.  With
    ``skip_unreadable`` a file that fails to decode is dropped, not fatal;
    embedding needs every image, so it turns that off.  ``skip_batches``
    continues a seeded training stream where a resumed run stopped, skipping
    file names, not decoded images.  With several workers each reads its own
    share of the files, ``worker_index::num_workers``.  A ``class_balance``
    above 0 draws training batches with replacement instead (``balanced_batches``).
    ``dropped`` counts the batches skipped as unreadable.
    """
    import tensorflow as tf

    load = index.reader.loader(image_size)
    paths, labels = index.paths[worker_index::num_workers], index.labels[worker_index::num_workers]
    if training and class_balance:
        dataset = balanced_batches(paths, labels, class_balance, batch_size=batch_size,
                                   seed=seed, skip_batches=skip_batches, stream=worker_index)
    else:
        dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
        if training:
            dataset = dataset.shuffle(len(index), seed=seed,
                                      reshuffle_each_iteration=True).repeat()
            dataset = dataset.skip(skip_batches * batch_size)
        dataset = dataset.batch(batch_size, drop_remainder=training)
    decode = lambda items, labels: (load(items), labels)  # noqa: E731
    if skip_unreadable:  # a file broken since indexing costs its batch, counted, not the run
        dataset = decode_or_drop(dataset, decode, dropped, deterministic or not training)
    else:
        dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                              deterministic=deterministic or not training)
    return dataset.prefetch(tf.data.AUTOTUNE)


class DroppedBatches:
    """The batches a dataset dropped because they could not be read (an image broken
    since indexing, a truncated shard), counted as gaps in the batches' ordinals, so
    that a run can say what each epoch lost.  ``take()`` returns the count since the
    last call."""

    def __init__(self):
        self._lock = threading.Lock()
        self._seen, self._produced, self._reported = {}, {}, 0

    def seen(self, stream: int, ordinal: int) -> None:
        with self._lock:
            self._seen[stream] = max(self._seen.get(stream, -1), int(ordinal))
            self._produced[stream] = self._produced.get(stream, 0) + 1

    def take(self) -> int:
        with self._lock:
            total = sum(self._seen[s] + 1 - self._produced[s] for s in self._seen)
            new, self._reported = total - self._reported, total
            return max(0, new)


_streams = itertools.count()


def decode_or_drop(dataset, decode, dropped: DroppedBatches | None, deterministic: bool):
    """``dataset.map(decode)`` where a batch that fails to decode is dropped (and counted
    in ``dropped``) instead of ending the run."""
    import tensorflow as tf

    if dropped is None:
        return dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                           deterministic=deterministic).ignore_errors(log_warning=True)
    stream = next(_streams)

    def note(ordinal, images, labels):
        done = tf.py_function(lambda n: dropped.seen(stream, n.numpy()) or 0, [ordinal],
                              tf.int32)
        with tf.control_dependencies([done]):
            return tf.identity(images), labels

    def numbered(ordinal, batch):
        return (ordinal, *(decode(*batch) if isinstance(batch, tuple) else decode(batch)))

    dataset = dataset.enumerate().map(numbered,
                                      num_parallel_calls=tf.data.AUTOTUNE,
                                      deterministic=deterministic)
    return dataset.ignore_errors().map(note)


def sampling_weights(labels, power: float):
    """Each image's probability of being drawn: its identity's image count to the power
    ``-power``, normalized (0: every image alike; 1: every identity alike)."""
    import numpy as np

    labels = np.asarray(labels)
    counts = np.bincount(labels)
    weights = counts[labels].astype(np.float64) ** -power
    return weights / weights.sum()


def balanced_batches(items, labels, power: float, *, batch_size: int, seed: int,
                     skip_batches: int = 0, stream: int = 0):
    """An endless dataset of (items, labels) batches drawn with replacement by
    ``sampling_weights``; batch k depends only on (seed, stream, k), so a resumed
    run skips batches without drawing them, and each worker has its own stream."""
    import numpy as np
    import tensorflow as tf

    cdf = tf.constant(np.cumsum(sampling_weights(labels, power)))
    items, labels, last = tf.constant(items), tf.constant(labels), len(labels) - 1

    def draw(batch):
        step_seed = tf.stack([tf.cast(seed, tf.int64), batch * 1024 + stream])
        u = tf.random.stateless_uniform([batch_size], seed=step_seed, dtype=tf.float64)
        picks = tf.minimum(tf.searchsorted(cdf, u, side="right"), last)
        return tf.gather(items, picks), tf.gather(labels, picks)

    return tf.data.Dataset.counter(start=skip_batches).map(draw)


def decode_batch(items, image_size: int, read: bool = False, sized_jpegs: bool = False):
    """Decode a batch of encoded images (or files, with ``read``) to uint8 RGB.

    ``sized_jpegs`` says every item is a 3-channel JPEG of ``image_size``²
    (what ``facekit pack`` stores): they skip the format check and the resize.
    """
    import tensorflow as tf

    def decode(item):
        contents = tf.io.read_file(item) if read else item
        if sized_jpegs:
            return tf.io.decode_jpeg(contents, channels=3)
        return decode_image(contents, image_size)

    return tf.map_fn(decode, items, parallel_iterations=64,
                     fn_output_signature=tf.TensorSpec((image_size, image_size, 3), tf.uint8))


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
