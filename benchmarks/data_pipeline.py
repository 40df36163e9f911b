"""Input-pipeline throughput: facekit versus ImageDataGenerator and a decode-only ceiling.

On one folder of 112x112 JPEGs (generated demo faces, and optionally the LFW
subset after `facekit prepare`) it measures images/second after warm-up of
  (a) facekit's training pipeline (batch 128; flips run in the model),
  (a') the same with the flip done on the CPU in tf.data, for reference,
  (b) facekit reading packed TFRecord shards (the training part of a 5%
      validation split, as `facekit train --val-split 0.05` reads them),
  (e) facekit reading the same images from an insightface train.rec/train.idx
      (written by facekit.data.recordio, read without MXNet, as `facekit train` does),
  (c) the design notes' baseline: tf_keras ImageDataGenerator(rescale=1/255,
      horizontal_flip=True).flow_from_dataframe(...),
  (d) a decode-only ceiling: parallel tf.io.decode_jpeg of the same files,
  (d') the same decoding done a batch at a time (facekit's way), a stricter ceiling,
and the time to load a cached index of 1,000,000 entries. Pipelines take turns
in rounds and ratios are taken within a round, to tame the noise of a shared
machine; each measurement starts a fresh iterator, so no pipeline fills its
buffers while another is timed.

    pip install -e ".[benchmark]" && python benchmarks/data_pipeline.py [--images 3000] [--lfw]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BATCH = 128


def measure(pipelines: dict, count: int, warmup: int = 5, rounds: int = 5) -> list[dict]:
    """Images/s of each pipeline in each of ``rounds`` rounds of ``count`` batches.

    Each measurement starts a fresh iterator, warms it up and times the next
    ``count`` batches; the iterator is then dropped, so no pipeline works
    ahead (fills its prefetch buffers) while another one is timed.  The
    pipelines take turns within every round, so a ratio taken within one round
    compares them under the same load of the shared 2-core machine.
    """
    results = []
    for _ in range(rounds):
        rates = {}
        for name, batches in pipelines.items():
            iterator = iter(batches)
            for _ in range(warmup):
                next(iterator)
            started = time.perf_counter()
            images = sum(len(next(iterator)[0]) for _ in range(count))
            rates[name] = images / (time.perf_counter() - started)
            del iterator
        results.append(rates)
    return results


def ratio(rounds: list[dict], top: str, bottom: str) -> str:
    """Median and range of the per-round ratio ``top / bottom``."""
    values = sorted(r[top] / r[bottom] for r in rounds)
    return f"{np.median(values):.2f} ({values[0]:.2f}-{values[-1]:.2f})"


def run(folder: Path, work: Path, epochs: float) -> None:
    import pandas as pd
    import tensorflow as tf

    from facekit.data.pipeline import make_dataset
    from facekit.data.sources import load_index
    from facekit.data.shards import pack, shard_dataset
    from facekit.data.shards import record_bucket
    from facekit.data.recordio import write_recordio

    index = load_index(folder)
    batches = max(10, int(epochs * len(index) / BATCH))
    print(f"\n{folder}: {len(index)} images of {len(index.classes)} identities; "
          f"{batches} batches of {BATCH} per measurement")

    folder_pipeline = make_dataset(index, image_size=112, batch_size=BATCH, training=True)

    def cpu_flip(images, labels):
        flip = tf.random.uniform([tf.shape(images)[0], 1, 1, 1]) < 0.5
        return tf.where(flip, tf.reverse(images, axis=[2]), images), labels

    shards = work / f"shards-{folder.name}"
    if not shards.exists():
        pack(index, shards, images_per_shard=1000, progress=False)
    rec = work / f"rec-{folder.name}"
    if not rec.exists():
        write_recordio(rec, ((int(label), Path(path).read_bytes())
                             for path, label in zip(index.paths, index.labels)))
    rec_pipeline = make_dataset(load_index(rec), image_size=112, batch_size=BATCH,
                                training=True)

    from tf_keras.preprocessing.image import ImageDataGenerator

    frame = pd.DataFrame({"image_names": index.paths,
                          "image_classes": [str(label) for label in index.labels]})
    generator = ImageDataGenerator(rescale=1.0 / 255, horizontal_flip=True).flow_from_dataframe(
        frame, directory=None, x_col="image_names", y_col="image_classes",
        class_mode="categorical", target_size=(112, 112), batch_size=BATCH,
        validate_filenames=False)
    ceiling = (tf.data.Dataset.from_tensor_slices(index.paths).repeat()
               .map(lambda p: tf.io.decode_jpeg(tf.io.read_file(p), channels=3),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
               .batch(BATCH).prefetch(tf.data.AUTOTUNE))

    def decode_jpegs(paths):
        return tf.map_fn(lambda p: tf.io.decode_jpeg(tf.io.read_file(p), channels=3), paths,
                         parallel_iterations=64,
                         fn_output_signature=tf.TensorSpec((112, 112, 3), tf.uint8))

    batched_ceiling = (tf.data.Dataset.from_tensor_slices(index.paths).repeat().batch(BATCH)
                       .map(decode_jpegs, num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=False)
                       .prefetch(tf.data.AUTOTUNE))
    rounds = measure({
        "a": folder_pipeline,
        "a_cpu": folder_pipeline.map(cpu_flip, num_parallel_calls=tf.data.AUTOTUNE),
        "b": shard_dataset(shards, image_size=112, batch_size=BATCH, training=True,
                           keep=lambda ids: record_bucket(ids) >= 50),
        "e": rec_pipeline,
        "c": generator,
        "d": ceiling.map(lambda x: (x,)),
        "d_batched": batched_ceiling.map(lambda x: (x,)),
    }, batches)
    median = {key: np.median([r[key] for r in rounds]) for key in rounds[0]}
    print(f"(a)  facekit folder pipeline          {median['a']:9.0f} images/s")
    print(f"(a') facekit folder + CPU batch flip   {median['a_cpu']:9.0f} images/s")
    print(f"(b)  facekit packed shards            {median['b']:9.0f} images/s")
    print(f"(e)  facekit insightface .rec         {median['e']:9.0f} images/s")
    print(f"(c)  ImageDataGenerator (baseline)    {median['c']:9.0f} images/s")
    print(f"(d)  decode-only ceiling              {median['d']:9.0f} images/s")
    print(f"(d') decode-only, decoded by batch    {median['d_batched']:9.0f} images/s")
    print(f"(medians of {len(rounds)} rounds; ratios taken within each round: median (range))")
    print(f"a/c = {ratio(rounds, 'a', 'c')}   b/c = {ratio(rounds, 'b', 'c')}   "
          f"a/d = {ratio(rounds, 'a', 'd')}   b/a = {ratio(rounds, 'b', 'a')}   "
          f"a'/d = {ratio(rounds, 'a_cpu', 'd')}   a/d' = {ratio(rounds, 'a', 'd_batched')}   "
          f"e/a = {ratio(rounds, 'e', 'a')}   e/b = {ratio(rounds, 'e', 'b')}")


def index_load_time(work: Path) -> None:
    from facekit.data.index import DatasetIndex, _read_cache, _write_cache
    from facekit.data.readers import FILES

    n = 1_000_000
    labels = (np.arange(n) // 68).astype(np.int32)
    paths = np.array([f"/datasets/faces_emore_112x112_folders/{c:05d}/{i % 68}.jpg"
                      for i, c in enumerate(labels)])
    classes = [f"{c:05d}" for c in range(labels.max() + 1)]
    table, meta = work / "index.feather", work / "index.json"
    _write_cache(DatasetIndex(paths, labels, classes), table, meta, "key", True)
    started = time.perf_counter()
    loaded = _read_cache(table, meta, "key", True, FILES)
    seconds = time.perf_counter() - started
    assert len(loaded) == n
    print(f"\ncached index of {n:,} entries ({len(classes):,} identities) loads in "
          f"{seconds:.3f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000, help="Generated images.")
    parser.add_argument("--epochs", type=float, default=2.0, help="Data passes measured.")
    parser.add_argument("--lfw", action="store_true",
                        help="Also measure ../shared/data/lfw_a_subset after prepare.")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="facekit-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    from facekit.data.demo import write_demo_dataset

    identities = max(2, args.images // 60)
    generated = work / "generated"
    if not generated.exists():
        write_demo_dataset(generated, identities, args.images // identities, 112, seed=0)
    run(generated, work, args.epochs)
    if args.lfw and (SHARED / "lfw_a_subset").is_dir():
        from facekit.data.prepare import prepare_dataset

        lfw = work / "lfw112"
        if not lfw.exists():
            prepare_dataset(SHARED / "lfw_a_subset", lfw, size=112, crop=150, progress=False)
        run(lfw, work, args.epochs)
    index_load_time(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
