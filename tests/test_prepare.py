"""facekit prepare, and the shared LFW subset where it exists."""

import numpy as np
import pytest
from PIL import Image

from facekit.data.prepare import prepare_dataset
from tests.conftest import SHARED_DATA, run_facekit


def test_prepare_converts_formats_crops_and_reports_skips(tmp_path):
    src = tmp_path / "src"
    (src / "ann").mkdir(parents=True)
    (src / "bob").mkdir()
    gray = np.zeros((250, 250), np.uint8)
    gray[75:175, 75:175] = 255  # a bright centre square
    Image.fromarray(gray).save(src / "ann" / "ann_0001.pgm")
    Image.new("RGBA", (60, 40), (10, 200, 30, 128)).save(src / "ann" / "ann_0002.png")
    Image.new("RGB", (30, 30), (1, 2, 3)).save(src / "bob" / "bob_0001.tiff")
    (src / "bob" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    report = prepare_dataset(src, tmp_path / "dst", size=32, crop=100, workers=1,
                             progress=False)
    assert (report.written, report.identities) == (3, 2)
    assert [p.endswith("broken.jpg") for p, _ in report.skipped] == [True]
    cropped = np.asarray(Image.open(tmp_path / "dst" / "ann" / "ann_0001.jpg"))
    assert cropped.shape == (32, 32, 3)
    assert cropped.mean() > 240  # only the bright centre is left
    assert Image.open(tmp_path / "dst" / "bob" / "bob_0001.jpg").mode == "RGB"


def test_prepare_cli(tmp_path):
    (tmp_path / "src" / "x").mkdir(parents=True)
    Image.new("L", (50, 50)).save(tmp_path / "src" / "x" / "a.bmp")
    result = run_facekit("prepare", str(tmp_path / "src"), str(tmp_path / "dst"),
                         "--size", "40")
    assert result.returncode == 0, result.stderr
    assert "Wrote 1 images of 1 identities" in result.stdout
    assert Image.open(tmp_path / "dst" / "x" / "a.jpg").size == (40, 40)
    missing = run_facekit("prepare", str(tmp_path / "nope"), str(tmp_path / "dst"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


@pytest.mark.skipif(not (SHARED_DATA / "lfw_a_subset").is_dir(),
                    reason="the shared LFW subset is not in this checkout's ../shared")
def test_lfw_subset_pairs_resolve_and_prepare(tmp_path):
    from facekit.eval.sets import VerificationSet

    vset = VerificationSet.from_pairs(SHARED_DATA / "lfw_a_subset",
                                      SHARED_DATA / "lfw_a_subset_pairs.txt")
    assert (vset.folds, len(vset.issame), int(vset.issame.sum())) == (3, 1800, 900)
    src = tmp_path / "src"
    src.mkdir()
    (src / "Colin_Powell").symlink_to(SHARED_DATA / "lfw_a_subset" / "Colin_Powell")
    report = prepare_dataset(src, tmp_path / "dst", size=112, crop=150, progress=False)
    assert report.written >= 20 and not report.skipped
    image = Image.open(tmp_path / "dst" / "Colin_Powell" / "Colin_Powell_0001.jpg")
    assert (image.size, image.mode) == ((112, 112), "RGB")
