"""Packed datasets: TFRecord shards of encoded JPEG bytes with integer labels.

The role MXNet ``.rec`` files play for insightface: a few large sequential
files instead of millions of small ones.  Records are written in a shuffled
order, each shard read with parallel interleave; each worker of a
multi-worker run reads its own subset of shards.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from facekit.console import progress_bar
from facekit.errors import FacekitError
from facekit.files import read_text
from facekit.data.index import DatasetIndex

META_FILE = "facekit-shards.json"


def is_packed(path) -> bool:
    return (Path(path) / META_FILE).is_file()


def read_meta(path) -> dict:
    """The metadata of packed shards, checked: a bad file is one sentence naming it."""
    file = Path(path) / META_FILE
    try:
        meta = json.loads(read_text(file, "The shard metadata"))
    except ValueError as exc:
        raise FacekitError(f"The shard metadata '{file}' is not JSON ({exc}).") from None

    def whole(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    shards = meta.get("shards") if isinstance(meta, dict) else None
    if not (isinstance(meta, dict) and whole(meta.get("images"))
            and isinstance(meta.get("classes"), list)
            and all(isinstance(name, str) for name in meta["classes"])
            and isinstance(shards, list) and shards
            and all(isinstance(shard, dict) and whole(shard.get("images"))
                    and isinstance(shard.get("file"), str)
                    and Path(shard["file"]).name == shard["file"] for shard in shards)
            and sum(shard["images"] for shard in shards) == meta["images"]):
        raise FacekitError(f"The shard metadata '{file}' is damaged (expected images, classes "
                           "and shards as facekit pack writes them); pack the data again.")
    return meta


def pack(index: DatasetIndex, out, *, images_per_shard: int = 5000, image_size: int = 112,
         seed: int = 0, progress: bool = True) -> dict:
    """Write ``index`` as shards; JPEGs of the right size are stored as they are."""
    import tensorflow as tf

    out = Path(out)
    if is_packed(out):
        raise FacekitError(f"'{out}' already holds packed shards; choose another folder.")
    out.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(seed).permutation(len(index))
    shards = max(1, math.ceil(len(index) / images_per_shard))
    bar = progress_bar(len(index)) if progress else None
    files = []
    for shard, chunk in enumerate(np.array_split(order, shards)):
        name = f"shard-{shard:05d}-of-{shards:05d}.tfrecord"
        with tf.io.TFRecordWriter(str(out / name)) as writer:
            for position in chunk:
                example = tf.train.Example(features=tf.train.Features(feature={
                    "image": _bytes(_encoded_jpeg(index.encoded(position), image_size)),
                    "label": _int(int(index.labels[position])),
                }))
                writer.write(example.SerializeToString())
            if bar is not None:
                bar.add(len(chunk))
        files.append({"file": name, "images": int(len(chunk))})
    meta = {"format": "facekit-shards", "version": 1, "images": int(len(index)),
            "image_size": image_size, "classes": index.classes, "shards": files,
            "counts": index.counts().tolist()}
    (out / META_FILE).write_text(json.dumps(meta, indent=1))
    return meta


def pack_recordio(index: DatasetIndex, out, *, image_size: int = 112,
                  progress: bool = True) -> dict:
    """Write ``index`` in insightface's ``.rec`` layout (for arcface_torch and friends),
    identities in class order, JPEGs of the right size stored as they are."""
    from facekit.data.recordio import write_recordio

    order = np.argsort(index.labels, kind="stable")
    bar = progress_bar(len(index)) if progress else None

    def images():
        for position in order:
            yield int(index.labels[position]), _encoded_jpeg(index.encoded(position), image_size)
            if bar is not None:
                bar.add(1)

    counts = write_recordio(out, images(), image_size)
    (Path(out) / "classes.json").write_text(json.dumps(index.classes, indent=1) + "\n")
    return counts


def _encoded_jpeg(data: bytes, image_size: int) -> bytes:
    import tensorflow as tf

    if data[:2] == b"\xff\xd8":
        shape = tf.image.extract_jpeg_shape(data).numpy()
        if tuple(shape[:2]) == (image_size, image_size) and shape[2] == 3:
            return data
    from facekit.data.pipeline import decode_image

    return tf.io.encode_jpeg(decode_image(data, image_size), quality=95).numpy()


def _bytes(value: bytes):
    import tensorflow as tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int):
    import tensorflow as tf

    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


KEEP_BLOCK = 256  # records tested by ``keep`` per call


def record_bucket(record_id):
    """A fixed pseudo-random bucket 0..999 per record id (NumPy or TensorFlow integers):
    the validation split of shards holds the records of the first buckets."""
    return (record_id * 2654435761) % 1000


def shard_dataset(path, *, image_size: int, batch_size: int, training: bool, seed: int = 0,
                  keep=None, num_workers: int = 1, worker_index: int = 0,
                  shuffle_buffer: int = 10_000, skip_batches: int = 0,
                  deterministic: bool = False, meta: dict | None = None,
                  dropped=None):
    """(uint8 images, int32 labels) batches from packed shards; ``dropped`` (a
    facekit.data.pipeline.DroppedBatches) counts the batches that could not be read.

    ``keep(record_ids)`` (vectorized) selects records (a validation split)
    before anything is parsed: shard k holds the records ``start_k, start_k + 1, ...`` of the
    packed order.  Records are parsed and decoded a batch at a time.  With
    several workers each reads shards ``worker_index::num_workers``.  ``meta`` saves
    reading the metadata file again.
    """
    import tensorflow as tf

    from facekit.data.pipeline import decode_batch, decode_or_drop

    meta = meta or read_meta(path)
    files = [str(Path(path) / shard["file"]) for shard in meta["shards"]]
    starts = np.cumsum([0] + [shard["images"] for shard in meta["shards"]])[:-1]
    if num_workers > 1:  # ShardSource.check_workers makes sure each worker gets one
        files, starts = files[worker_index::num_workers], starts[worker_index::num_workers]

    block = KEEP_BLOCK

    def read_shard(file, start):
        records = tf.data.TFRecordDataset(file)
        if keep is None:
            return records

        def kept(number, records):  # blocks of records: one call per block, not per record
            ids = start + number * block + tf.range(tf.shape(records, out_type=tf.int64)[0])
            return tf.boolean_mask(records, keep(ids))

        return records.batch(block).enumerate().map(kept).unbatch()

    dataset = tf.data.Dataset.from_tensor_slices((files, starts.astype(np.int64)))
    if training:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = dataset.interleave(read_shard, cycle_length=min(len(files), 8),
                                 num_parallel_calls=tf.data.AUTOTUNE,
                                 deterministic=deterministic or not training)
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.skip(skip_batches * batch_size)
    spec = {"image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64)}

    # pack() stores 3-channel JPEGs of its image size: at that size they need no
    # format sniffing and no resize, which is faster than decoding any image.
    packed_as_is = meta.get("image_size") == image_size

    def parse_and_decode(records):
        examples = tf.io.parse_example(records, spec)
        images = decode_batch(examples["image"], image_size, sized_jpegs=packed_as_is)
        return images, tf.cast(examples["label"], tf.int32)

    dataset = dataset.batch(batch_size, drop_remainder=training)
    dataset = decode_or_drop(dataset, parse_and_decode, dropped,
                             deterministic or not training)
    return dataset.prefetch(tf.data.AUTOTUNE)



# The formats ``facekit pack`` writes, by name: a writer(index, out, ...) each.
WRITERS = {"shards": pack, "rec": pack_recordio}
