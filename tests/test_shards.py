"""Packed TFRecord shards: round trip, per-worker sharding, training on them."""

import json

import numpy as np
import pytest

import facekit
from facekit.data.pipeline import make_dataset
from facekit.errors import FacekitError
from facekit.data.sources import load_index
from facekit.data.shards import pack, read_meta, record_bucket, shard_dataset
from facekit.data.sources import open_source
from tests.conftest import TINY_TRAIN, run_facekit


@pytest.fixture(scope="module")
def packed(tmp_path_factory, tiny_faces):
    out = tmp_path_factory.mktemp("packed") / "shards"
    pack(load_index(tiny_faces), out, images_per_shard=12, image_size=32, progress=False)
    return out


def test_pack_round_trip_matches_the_folder(packed, tiny_faces):
    meta = read_meta(packed)
    assert meta["images"] == 40 and len(meta["shards"]) == 4
    assert meta["classes"] == [f"person_{i:03d}" for i in range(4)]
    index = load_index(tiny_faces)
    [(folder_images, folder_labels)] = list(make_dataset(
        index, image_size=32, batch_size=64, training=False))
    [(shard_images, shard_labels)] = list(shard_dataset(
        packed, image_size=32, batch_size=64, training=False))
    key = lambda images, labels: sorted(  # noqa: E731
        (int(label), image.tobytes()) for image, label in zip(images.numpy(), labels.numpy()))
    assert key(shard_images, shard_labels) == key(folder_images, folder_labels)


def test_each_worker_reads_its_own_shards(packed):
    seen = []
    for worker in range(2):
        [(images, _)] = list(shard_dataset(packed, image_size=32, batch_size=64,
                                           training=False, num_workers=2,
                                           worker_index=worker))
        seen.append({image.tobytes() for image in images.numpy()})
    assert len(seen[0]) + len(seen[1]) == 40 and not seen[0] & seen[1]
    source = open_source(packed, val_split=0.0, split_by="images", seed=0)
    source.load()
    source.check_workers(4, batch_size=8)  # one shard each
    with pytest.raises(FacekitError, match="4 shard\\(s\\) for 5 workers"):
        source.check_workers(5, batch_size=8)


@pytest.mark.parametrize("block", [5, 256])
def test_the_validation_split_of_shards_partitions_the_records(packed, monkeypatch, block):
    from facekit.data import shards

    monkeypatch.setattr(shards, "KEEP_BLOCK", block)

    def images(keep):
        return [x.tobytes() for batch, _ in shard_dataset(
            packed, image_size=32, batch_size=64, training=False, keep=keep)
                for x in batch.numpy()]

    val = images(lambda ids: record_bucket(ids) < 250)
    train = images(lambda ids: record_bucket(ids) >= 250)
    assert len(val) == int(np.sum(record_bucket(np.arange(40)) < 250)) > 0
    assert sorted(val + train) == sorted(images(None))


def test_train_on_shards_with_a_validation_split(packed, tmp_path, tinynet_plugin):
    result = facekit.train(data=str(packed), output=str(tmp_path / "run"), head="softmax",
                           loss="softmax", val_split=0.25, **TINY_TRAIN)
    assert {"val_accuracy", "val_loss"} <= set(result.history)
    assert json.loads((result.run_dir / "classes.json").read_text())[0] == "person_000"
    with pytest.raises(FacekitError, match="split_by identities is not available"):
        facekit.train(data=str(packed), split_by="identities", output=str(tmp_path / "r2"))
    with pytest.raises(FacekitError, match="class_balance is not available for packed"):
        facekit.train(data=str(packed), class_balance=1.0, output=str(tmp_path / "r3"))


def test_pack_command(tmp_path, tiny_faces):
    result = run_facekit("pack", str(tiny_faces), str(tmp_path / "out"),
                         "--images-per-shard", "25", "--image-size", "32")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Packed 40 images of 4 identities into 2 shard(s)" in result.stdout
    again = run_facekit("pack", str(tiny_faces), str(tmp_path / "out"))
    assert again.returncode == 2 and "already holds packed shards" in again.stderr


def test_a_truncated_shard_is_counted_not_silent(packed, tmp_path):
    import shutil

    from facekit.data.pipeline import DroppedBatches

    copy = tmp_path / "shards"
    shutil.copytree(packed, copy)
    first = copy / read_meta(copy)["shards"][0]["file"]
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    dropped = DroppedBatches()
    dataset = shard_dataset(copy, image_size=32, batch_size=4, training=False,
                            dropped=dropped)
    read = sum(len(labels) for _, labels in dataset)
    assert read < read_meta(copy)["images"]
    assert dropped.take() >= 1
