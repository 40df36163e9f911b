"""Folder scanning, the validation split and the tf.data pipeline."""

import numpy as np
import pytest
from PIL import Image

from facekit.data.pipeline import make_dataset
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
    dataset = make_dataset(index, image_size=32, batch_size=4, training=True, seed=0)
    batches = [images.numpy() for images, _ in dataset.take(10)]
    assert all(b.shape == (4, 32, 32, 3) and b.dtype == np.uint8 for b in batches)
    reds = {int(v) for b in batches for v in b[:, 0, 0, 0]}
    assert reds == {0, 1, 2, 4, 5}


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
