"""The cached index and every kind of bad input."""

import time

import numpy as np
import pytest
from PIL import Image

from facekit.errors import FacekitError
from facekit.data.index import LANDMARKS_FILE, UNLABELLED, cache_paths, scan_folder
from facekit.data.sources import load_index
from tests.conftest import TINY_TRAIN, run_facekit


def make_folder(root, identities=3, images=4):
    for n in range(identities):
        (root / f"id{n}").mkdir(parents=True, exist_ok=True)
        for i in range(images):
            Image.new("RGB", (24, 24), (n * 40, i * 30, 0)).save(root / f"id{n}" / f"{i}.jpg")
    return root


def add_bad_files(root):
    good = (root / "id0" / "0.jpg").read_bytes()
    (root / "id0" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "id1" / "empty.jpg").write_bytes(b"")
    (root / "id1" / "text.jpg").write_text("this is not a picture")
    (root / "id2" / "notes.txt").write_text("a note")
    (root / "id2" / "scan.tiff").write_bytes(b"II*\x00")
    (root / "nobody").mkdir()
    return {
        "truncated.jpg": "corrupt or truncated", "empty.jpg": "empty file (0 bytes)",
        "text.jpg": "not an image file (unknown content)", "notes.txt": "not an image file",
        "scan.tiff": "convert the folder with `facekit prepare`",
        "nobody": "identity folder without images"}


def test_bad_files_are_skipped_with_reasons(tmp_path):
    root = make_folder(tmp_path / "data")
    expected = add_bad_files(root)
    index = load_index(root, use_cache=False)
    assert len(index) == 12 and index.classes == ["id0", "id1", "id2"]
    reasons = {path.rsplit("/", 1)[-1]: reason for path, reason in index.skipped}
    assert set(reasons) == set(expected)
    for name, fragment in expected.items():
        assert fragment in reasons[name], (name, reasons[name])
    assert "skipped 6 file(s)" in index.summary()


def test_without_labels_a_prepared_folder_lists_no_skipped_file(tmp_path):
    root = make_folder(tmp_path / "data", identities=2, images=2)
    (root / LANDMARKS_FILE).write_text("id0/0.jpg 1 2 3 4 5 6 7 8 9 10\n")  # prepare's own
    (root / "notes.txt").write_text("a note")
    index = scan_folder(root, labelled=False)
    assert len(index) == 4 and index.classes == [UNLABELLED]
    assert [path.rsplit("/", 1)[-1] for path, _ in index.skipped] == ["notes.txt"]


def test_identity_whose_images_are_all_broken_is_dropped(tmp_path):
    root = make_folder(tmp_path / "data", identities=2, images=2)
    (root / "zz").mkdir()
    (root / "zz" / "a.jpg").write_bytes(b"")
    index = load_index(root, use_cache=False)
    assert index.classes == ["id0", "id1"]
    assert ("zz", "identity without readable images: dropped") in index.skipped


@pytest.mark.parametrize("setup,message", [
    (lambda root: None, "does not exist"),
    (lambda root: root.mkdir(), "holds no identity sub-folders"),
    (lambda root: (root / "a").mkdir(parents=True), "holds no images"),
])
def test_unusable_data_folders_stop_before_training(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(FacekitError, match=message):
        load_index(root)


def test_cache_is_reused_and_rebuilt_when_the_folder_changes(tmp_path):
    root = make_folder(tmp_path / "data")
    first = load_index(root)
    table, meta = cache_paths(root)
    assert table.exists() and meta.exists()
    stamp = table.stat().st_mtime_ns
    again = load_index(root)
    assert table.stat().st_mtime_ns == stamp  # served from the cache
    assert list(again.paths) == list(first.paths) and again.classes == first.classes
    time.sleep(0.01)
    Image.new("RGB", (24, 24)).save(root / "id1" / "new.jpg")
    assert len(load_index(root)) == len(first) + 1  # added file
    time.sleep(0.01)
    (root / "id2" / "0.jpg").unlink()
    assert len(load_index(root)) == len(first)  # removed file
    time.sleep(0.01)
    (root / "id9").mkdir()
    Image.new("RGB", (24, 24)).save(root / "id9" / "a.jpg")
    assert load_index(root).classes[-1] == "id9"  # added identity


def test_glob_pattern(tmp_path):
    root = make_folder(tmp_path / "data")
    index = scan_folder(str(root / "*" / "[01].jpg"))
    assert len(index) == 6 and index.classes == ["id0", "id1", "id2"]


def test_index_command_summary(tmp_path):
    root = make_folder(tmp_path / "data", identities=3, images=3)
    add_bad_files(root)
    result = run_facekit("index", str(root))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "9 images of 3 identities; images per identity: min 3, median 3, max 3" \
        in result.stdout
    assert "skipped 6 file(s)" in result.stdout
    assert "empty.jpg: empty file" in result.stdout
    missing = run_facekit("index", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    a_file = root / "id0" / "0.jpg"
    result = run_facekit("index", str(a_file))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"Error: '{a_file}' is a file, not a folder of identity sub-folders "
        "(DATA/<identity>/<image>).")


def test_run_over_bad_files_lists_them(tmp_path, tinynet_plugin):
    import facekit

    root = make_folder(tmp_path / "data", identities=3, images=6)
    add_bad_files(root)
    result = facekit.train(data=str(root), output=str(tmp_path / "run"), head="softmax",
                           loss="softmax", val_split=0.2, **TINY_TRAIN)
    skipped = (result.run_dir / "skipped_files.csv").read_text()
    for name in ("truncated.jpg", "empty.jpg", "text.jpg", "notes.txt", "scan.tiff"):
        assert name in skipped
    assert np.isfinite(result.history["loss"][0])


def test_single_image_identities_are_reported(tmp_path, tinynet_plugin, capsys):
    import facekit

    root = make_folder(tmp_path / "data", identities=3, images=5)
    (root / "solo").mkdir()
    Image.new("RGB", (24, 24)).save(root / "solo" / "only.jpg")
    facekit.train(data=str(root), output=str(tmp_path / "run"), head="softmax",
                  loss="softmax", val_split=0.2, **{**TINY_TRAIN, "verbose": 1})
    assert "1 identities have a single image" in capsys.readouterr().out


@pytest.mark.parametrize("damage", [
    lambda table, meta: meta.write_text("{not json"),
    lambda table, meta: meta.write_text('{"fingerprint": 3}'),
    lambda table, meta: table.write_bytes(b"garbage"),
    lambda table, meta: table.write_bytes(table.read_bytes()[:40]),
])
def test_a_damaged_cache_counts_as_missing(tmp_path, damage):
    root = make_folder(tmp_path / "data")
    first = load_index(root, verify=False)
    damage(*cache_paths(root))
    again = load_index(root, verify=False)
    assert list(again.paths) == list(first.paths) and again.classes == first.classes
    assert len(load_index(root, verify=False)) == len(first)  # and the cache is whole again


def _index_repeatedly(root, rounds):
    for _ in range(rounds):
        load_index(root, use_cache=True, verify=False)
        cache_paths(root)[1].unlink(missing_ok=True)  # every round writes the cache again
    return True


def test_processes_indexing_the_same_folder_at_once_do_not_collide(tmp_path):
    import concurrent.futures
    import multiprocessing

    root = make_folder(tmp_path / "data", identities=20, images=5)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(3, mp_context=context) as pool:
        done = list(pool.map(_index_repeatedly, [root] * 3, [15] * 3))
    assert done == [True] * 3
    table, _ = cache_paths(root)
    assert not [p for p in table.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_symlink_loop_is_one_sentence(tmp_path):
    root = make_folder(tmp_path / "data")
    (root / "loop").symlink_to(root / "loop")
    index = load_index(root, use_cache=False, verify=False)
    assert index.classes == ["id0", "id1", "id2"]  # the loop is neither a folder nor an image
    (root / "id0" / "loop").symlink_to(root / "id0" / "loop")
    assert len(load_index(root, use_cache=False, verify=False)) == 12


def test_a_file_rewritten_in_place_is_verified_again(tmp_path):
    import os

    root = make_folder(tmp_path / "data")
    assert load_index(root).skipped == []
    path = root / "id1" / "2.jpg"
    stat = path.stat()
    folder_stat = path.parent.stat()
    path.write_text("no longer a picture")
    # An in-place rewrite keeps the folders' times; keep them exactly, to be sure.
    os.utime(path.parent, ns=(folder_stat.st_atime_ns, folder_stat.st_mtime_ns))
    assert path.stat().st_mtime_ns != stat.st_mtime_ns or path.stat().st_size != stat.st_size
    skipped = load_index(root).skipped
    assert [(p.split("/")[-1], reason.split(" (")[0]) for p, reason in skipped] == [
        ("2.jpg", "not an image file")]
