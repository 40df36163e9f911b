"""Folder scanning, the validation split and the tf.data pipeline."""

import numpy as np
import pytest
from PIL import Image

from facekit.data.pipeline import DroppedBatches, make_dataset, sampling_weights
from facekit.data.split import split_index
from facekit.data.index import scan_folder
from facekit.errors import FacekitError


def write_image(path, size=(40, 30), mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    color = 128 if mode in ("L",) else tuple([100] * len(mode))
    Image.new(mode, size, color).save(path, format=fmt)


def test_scan_maps_sorted_folder_names_to_ids(tmp_path):
    for name in ("zed", "Alice Smith", "bob"):
        for i in range(2):
            write_image(tmp_path / name / f"{i}.jpg")
    (tmp_path / "bob" / "notes.txt").write_text("not an image")
    index = scan_folder(tmp_path)
    assert index.classes == ["Alice Smith", "bob", "zed"]
    assert list(index.labels) == [0, 0, 1, 1, 2, 2]
    assert all(p.endswith(".jpg") for p in index.paths)


def test_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FacekitError, match="does not exist"):
        scan_folder(tmp_path / "nowhere")
    (tmp_path / "empty_identity").mkdir()
    with pytest.raises(FacekitError, match="holds no images"):
        scan_folder(tmp_path)


def test_split_is_stratified_deterministic_and_keeps_one_training_image(tmp_path):
    for name, count in (("a", 20), ("b", 10), ("c", 1)):
        for i in range(count):
            write_image(tmp_path / name / f"{i}.png", fmt="PNG")
    index = scan_folder(tmp_path)
    train, val = split_index(index, 0.2, seed=3)
    assert np.bincount(val.labels, minlength=3).tolist() == [4, 2, 0]
    assert len(train) + len(val) == len(index)
    assert not set(train.paths) & set(val.paths)
    again, val_again = split_index(index, 0.2, seed=3)
    assert list(val.paths) == list(val_again.paths)
    _, other = split_index(index, 0.2, seed=4)
    assert list(other.paths) != list(val.paths)
    assert split_index(index, 0.0, seed=3)[1] is None


def test_pipeline_decodes_any_format_to_uint8_rgb(tmp_path):
    write_image(tmp_path / "a" / "gray.jpg", mode="L")
    write_image(tmp_path / "a" / "rgba.png", mode="RGBA", fmt="PNG")
    write_image(tmp_path / "b" / "img.bmp", fmt="BMP")
    write_image(tmp_path / "b" / "anim.gif", mode="P", fmt="GIF")
    index = scan_folder(tmp_path)
    [(images, labels)] = list(make_dataset(index, image_size=32, batch_size=8, training=False))
    assert images.dtype.name == "uint8" and images.shape == (4, 32, 32, 3)
    assert sorted(labels.numpy().tolist()) == [0, 0, 1, 1]


def test_training_pipeline_repeats_and_skips_files_broken_after_indexing(tmp_path):
    (tmp_path / "a").mkdir()
    for i in range(6):
        Image.new("RGB", (32, 32), (i, 0, 0)).save(tmp_path / "a" / f"{i}.png")
    index = scan_folder(tmp_path)
    (tmp_path / "a" / "3.png").write_bytes(b"")  # broken mid-run: logged and skipped
    dropped = DroppedBatches()
    dataset = make_dataset(index, image_size=32, batch_size=4, training=True, seed=0,
                           dropped=dropped)
    batches = [images.numpy() for images, _ in dataset.take(10)]
    assert all(b.shape == (4, 32, 32, 3) and b.dtype == np.uint8 for b in batches)
    reds = {int(v) for b in batches for v in b[:, 0, 0, 0]}
    assert reds == {0, 1, 2, 4, 5}
    # Ten batches came out; every one with 3.png in it was dropped, and counted.
    assert dropped.take() >= 3 and dropped.take() == 0


def test_split_by_identities_holds_out_whole_people(tmp_path):
    from facekit.data.split import split_identities

    for name in "abcdefghij":
        for i in range(3):
            write_image(tmp_path / name / f"{i}.png", fmt="PNG")
    index = scan_folder(tmp_path)
    train, held = split_identities(index, 0.2, seed=1)
    assert len(held.classes) == 2 and len(train.classes) == 8
    assert not set(train.classes) & set(held.classes)
    assert sorted(set(train.labels.tolist())) == list(range(8))
    assert len(held) == 6
    assert split_identities(index, 0.2, seed=1)[1].classes == held.classes
    with pytest.raises(FacekitError, match="needs at least 4 identities"):
        split_identities(scan_folder(str(tmp_path / "[abc]" / "*.png")), 0.5, seed=0)


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_sampling_weights_give_each_identity_its_count_to_one_minus_power(power):
    counts = np.array([7, 1, 3, 12])
    labels = np.repeat(np.arange(4), counts)[np.random.default_rng(0).permutation(23)]
    weights = sampling_weights(labels, power)
    share = np.array([weights[labels == c].sum() for c in range(4)])
    np.testing.assert_allclose(share, counts ** (1 - power) / np.sum(counts ** (1 - power)))
    for c in range(4):  # images of one identity are drawn alike
        assert np.ptp(weights[labels == c]) < 1e-15


def test_class_balanced_stream_draws_identities_alike_and_resumes(tmp_path):
    counts = {"a": 12, "b": 3, "c": 1}
    for name, n in counts.items():
        (tmp_path / name).mkdir()
        for i in range(n):
            Image.new("RGB", (8, 8), (10 * i, 0, 0)).save(tmp_path / name / f"{i}.png")
    index = scan_folder(tmp_path)

    def stream(**options):
        dataset = make_dataset(index, image_size=8, batch_size=8, training=True, seed=3,
                               class_balance=1.0, deterministic=True, **options)
        return [(images.numpy(), labels.numpy()) for images, labels in dataset.take(60)]

    batches = stream()
    labels = np.concatenate([labels for _, labels in batches])
    np.testing.assert_allclose(np.bincount(labels) / len(labels), [1 / 3] * 3, atol=0.05)
    reds = {int(images[k, 0, 0, 0]) for images, labels in batches
            for k in np.flatnonzero(labels == 0)}
    assert reds == {10 * i for i in range(12)}  # every image of the large identity drawn
    resumed = stream(skip_batches=5)
    for (images, labels), (again, again_labels) in zip(batches[5:10], resumed):
        np.testing.assert_array_equal(labels, again_labels)
        np.testing.assert_array_equal(images, again)
    shares = [np.concatenate([labels for _, labels in stream(num_workers=2, worker_index=w)])
              for w in (0, 1)]
    assert not np.array_equal(shares[0][:40], shares[1][:40])  # each worker its own stream
