"""LFW pairs files, drawn pairs and insightface .bin sets (no model needed)."""

import pickle

import numpy as np
import pytest
from PIL import Image

from facekit.data.index import scan_folder
from facekit.errors import FacekitError
from facekit.eval.sets import VerificationSet
from facekit.eval.pairs import PairList, draw_pairs, read_pairs, resolve_images, write_pairs

PAIRS = "2\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\nBob\t1\t2\nBob\t2\tAnn\t2\n"


@pytest.fixture
def lfw_folder(tmp_path):
    for name in ("Ann", "Bob"):
        (tmp_path / name).mkdir()
        for i in (1, 2):
            Image.new("RGB", (8, 8)).save(tmp_path / name / f"{name}_{i:04d}.jpg")
    return tmp_path


def test_read_pairs_and_resolve_lfw_names(tmp_path, lfw_folder):
    (tmp_path / "pairs.txt").write_text(PAIRS)
    pair_list = read_pairs(tmp_path / "pairs.txt")
    assert pair_list.folds == 2
    assert pair_list.issame.tolist() == [True, False, True, False]
    paths, first, second = resolve_images(lfw_folder, pair_list)
    assert len(paths) == 4  # each image once
    assert paths[first[1]].endswith("Ann/Ann_0001.jpg")
    assert paths[second[1]].endswith("Bob/Bob_0001.jpg")


def test_sorted_fallback_and_missing_image(tmp_path):
    (tmp_path / "x").mkdir()
    for name in ("b.png", "a.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / "x" / name)
    pairs = PairList(2, [("x", 1, "x", 2), ("x", 2, "x", 3)], np.array([True, True]))
    with pytest.raises(FacekitError, match="Image 3 of 'x' is not in"):
        resolve_images(tmp_path, pairs)
    paths, first, second = resolve_images(tmp_path, PairList(2, pairs.pairs[:1],
                                                             np.array([True])))
    assert paths[first[0]].endswith("x/a.png") and paths[second[0]].endswith("x/b.png")


def test_bad_pairs_files(tmp_path):
    (tmp_path / "bad.txt").write_text("2\t1\nAnn\t1\n")
    with pytest.raises(FacekitError, match="not in the LFW pairs.txt format"):
        read_pairs(tmp_path / "bad.txt")
    with pytest.raises(FacekitError, match="does not exist"):
        read_pairs(tmp_path / "none.txt")


def test_draw_pairs_is_balanced_deterministic_and_round_trips(tmp_path, tiny_faces):
    index = scan_folder(tiny_faces)
    drawn = draw_pairs(index, 40, folds=4, seed=7)
    assert drawn.issame.sum() == 20
    assert drawn.pairs == draw_pairs(index, 40, folds=4, seed=7).pairs
    assert drawn.pairs != draw_pairs(index, 40, folds=4, seed=8).pairs
    for a, i, b, j in drawn.pairs:
        assert (a == b) == (drawn.issame[drawn.pairs.index((a, i, b, j))])
    write_pairs(tmp_path / "p.txt", drawn)
    again = read_pairs(tmp_path / "p.txt")
    assert again.folds == 4 and again.pairs == drawn.pairs
    assert again.issame.tolist() == drawn.issame.tolist()
    with pytest.raises(FacekitError, match="multiple of 2 x 4 folds"):
        draw_pairs(index, 30, folds=4, seed=0)


def test_bin_file_as_written_by_python2(tmp_path, lfw_folder):
    images = [(lfw_folder / "Ann" / "Ann_0001.jpg").read_bytes(),
              (lfw_folder / "Bob" / "Bob_0001.jpg").read_bytes()] * 2
    with open(tmp_path / "tiny.bin", "wb") as f:
        pickle.dump((images, [True, False]), f, protocol=2)
    vset = VerificationSet.from_bin(tmp_path / "tiny.bin", folds=2)
    assert vset.name == "tiny" and vset.encoded
    assert vset.first.tolist() == [0, 2] and vset.second.tolist() == [1, 3]
    with open(tmp_path / "odd.bin", "wb") as f:
        pickle.dump((images[:3], [True, False]), f, protocol=2)
    with pytest.raises(FacekitError, match="3 images for 2 pairs"):
        VerificationSet.from_bin(tmp_path / "odd.bin")
    (tmp_path / "junk.bin").write_bytes(b"junk")
    with pytest.raises(FacekitError, match="not an insightface verification .bin"):
        VerificationSet.from_bin(tmp_path / "junk.bin")
