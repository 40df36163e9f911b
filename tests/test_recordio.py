"""insightface's train.rec/train.idx read without MXNet: framing, headers, the layout,
bad records, and training, indexing, packing and extracting from a .rec."""

import struct
from pathlib import Path

import numpy as np
import pytest

from facekit.data import recordio
from facekit.data.sources import load_index
from facekit.errors import FacekitError
from tests.conftest import TINY_TRAIN, invoke_facekit, run_facekit


def _folder_images(folder: Path):
    """(identity number, JPEG bytes) of a demo folder, grouped by identity."""
    identities = sorted(p for p in folder.iterdir() if p.is_dir())
    return [(number, image.read_bytes()) for number, identity in enumerate(identities)
            for image in sorted(identity.iterdir())]


@pytest.fixture(scope="module")
def rec_folder(tmp_path_factory, tiny_faces) -> Path:
    folder = tmp_path_factory.mktemp("rec")
    recordio.write_recordio(folder, _folder_images(tiny_faces), image_size=32)
    return folder


def _dmlc_frames(payload: bytes) -> bytes:
    """dmlc-core's RecordIOWriter::WriteRecord, written out independently: one part per
    aligned magic, the magic itself dropped, the last part flagged 3 (0 if alone)."""
    magic = struct.pack("<I", 0xCED7230A)
    out, start = b"", 0
    for i in range(0, len(payload) - len(payload) % 4, 4):
        if payload[i:i + 4] == magic:
            out += magic + struct.pack("<I", ((1 if start == 0 else 2) << 29) | (i - start))
            out += payload[start:i]
            start = i + 4
    out += magic + struct.pack("<I", ((3 if start else 0) << 29) | (len(payload) - start))
    out += payload[start:]
    return out + b"\0" * (-len(out) % 4)


@pytest.mark.parametrize("payload", [
    b"", b"abc", b"abcd" * 3,
    struct.pack("<I", 0xCED7230A) + b"xyz!",               # magic at the start
    b"head" + struct.pack("<I", 0xCED7230A) * 2 + b"tail5",  # twice in a row
    b"ab" + struct.pack("<I", 0xCED7230A) + b"cd",          # unaligned: not split
])
def test_framing_matches_dmlc_and_reads_back(tmp_path, payload):
    framed = recordio.frame(payload)
    assert framed == _dmlc_frames(payload)
    path = tmp_path / "one.rec"
    path.write_bytes(b"\0" * 8 + framed)  # a record need not start at byte 0
    assert recordio.RecordFile(path).payload(8) == payload


def test_headers_with_one_label_and_with_several():
    labels, image = recordio.unpack(struct.pack("<IfQQ", 0, 7.0, 3, 0) + b"JPEG")
    assert labels.tolist() == [7.0] and image == b"JPEG"
    payload = struct.pack("<IfQQ", 2, 0.0, 3, 0) + np.array([5, 9], "<f4").tobytes() + b"J"
    labels, image = recordio.unpack(payload)
    assert labels.tolist() == [5.0, 9.0] and image == b"J"
    with pytest.raises(recordio.RecordError, match="announces 5 labels"):
        recordio.unpack(struct.pack("<IfQQ", 5, 0.0, 3, 0) + b"1234")


def test_insightface_layout_is_indexed_by_identity(rec_folder, tiny_faces):
    index = load_index(rec_folder, verify=False)
    assert len(index) == 40 and index.classes == ["0", "1", "2", "3"]
    assert np.bincount(index.labels).tolist() == [10] * 4
    assert index.encoded(0) == _folder_images(tiny_faces)[0][1]
    assert (rec_folder / "property").read_text().strip() == "4,32,32"


def test_records_without_a_header_record_are_all_images(tmp_path):
    """The sequential layout (no record 0 header): every record is an image."""
    images = [(i % 2, b"\xff\xd8not-decoded") for i in range(5)]
    lines, rec = [], b""
    for key, (label, image) in enumerate(images, start=1):
        lines.append(f"{key}\t{len(rec)}\n")
        rec += recordio.frame(recordio.pack_record(float(label), image, key))
    (tmp_path / "train.rec").write_bytes(rec)
    (tmp_path / "train.idx").write_text("".join(lines))
    scanned = recordio.scan_recordio(tmp_path)
    assert scanned.labels.tolist() == [0, 1, 0, 1, 0] and scanned.image_size is None


def _corrupted_copy(rec_folder: Path, tmp_path: Path) -> tuple[Path, list[int]]:
    """A copy whose record 3 has a broken magic and record 5 an image that is no JPEG."""
    copy = tmp_path / "bad"
    copy.mkdir()
    keys, offsets = recordio.read_idx(rec_folder / "train.idx")
    data = bytearray((rec_folder / "train.rec").read_bytes())
    by_key = dict(zip(keys.tolist(), offsets.tolist()))
    data[by_key[3]:by_key[3] + 4] = b"XXXX"
    payload_start = by_key[5] + 8 + 24
    data[payload_start:payload_start + 64] = b"\0" * 64  # no JPEG header any more
    (copy / "train.rec").write_bytes(bytes(data))
    (copy / "train.idx").write_text((rec_folder / "train.idx").read_text())
    return copy, [by_key[3], by_key[5]]


def test_a_corrupt_record_is_skipped_and_named(rec_folder, tmp_path):
    bad, (broken, _) = _corrupted_copy(rec_folder, tmp_path)
    scanned = recordio.scan_recordio(bad)
    assert len(scanned.offsets) == 39
    assert scanned.skipped == [("train.rec record 3", f"train.rec record at byte {broken}: "
                                                      "no record starts here (wrong magic number)")]


def test_a_record_longer_than_the_file_is_named(rec_folder, tmp_path):
    copy = tmp_path / "short"
    copy.mkdir()
    data = bytearray((rec_folder / "train.rec").read_bytes())
    keys, offsets = recordio.read_idx(rec_folder / "train.idx")
    data[offsets[39] + 4:offsets[39] + 8] = struct.pack("<I", len(data))  # past the end
    (copy / "train.rec").write_bytes(bytes(data))
    (copy / "train.idx").write_text((rec_folder / "train.idx").read_text())
    scanned = recordio.scan_recordio(copy)
    assert len(scanned.offsets) == 39
    assert [name for name, _ in scanned.skipped] == ["train.rec record 39"]
    assert "truncated" in scanned.skipped[0][1]


def test_a_lost_header_record_is_one_sentence(rec_folder, tmp_path):
    copy = tmp_path / "headless"
    copy.mkdir()
    data = (rec_folder / "train.rec").read_bytes()
    keys, offsets = recordio.read_idx(rec_folder / "train.idx")
    (copy / "train.rec").write_bytes(data[:offsets[0] + 12])  # the writer puts it last
    (copy / "train.idx").write_text((rec_folder / "train.idx").read_text())
    with pytest.raises(FacekitError, match="does not match its index: .*truncated"):
        recordio.scan_recordio(copy)


@pytest.mark.parametrize("idx, message", [
    (None, "has no train.idx beside it"),
    ("0\t0\nnot a number\n", "is not a RecordIO index"),
])
def test_a_missing_or_wrong_idx_gets_one_sentence(rec_folder, tmp_path, idx, message):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.rec").write_bytes((rec_folder / "train.rec").read_bytes())
    if idx is not None:
        (folder / "train.idx").write_text(idx)
    result = run_facekit("index", str(folder), "--no-verify")
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_index_with_verify_skips_the_undecodable_record(rec_folder, tmp_path):
    bad, (broken, garbled) = _corrupted_copy(rec_folder, tmp_path)
    index = load_index(bad, use_cache=False)
    names = [name for name, _ in index.skipped]
    assert len(index) == 38 and f"{bad / 'train.rec'} record at byte {garbled}" in names


def test_train_pack_and_prepare_from_a_rec(rec_folder, tmp_path, tinynet_plugin, tiny_faces):
    import facekit
    from facekit.data.shards import read_meta

    result = facekit.train(data=str(rec_folder), output=str(tmp_path / "run"), val_split=0.2,
                           **TINY_TRAIN)
    assert result.history["loss"] and np.isfinite(result.history["loss"][-1])
    assert result.history["val_loss"]

    packed = run_facekit("pack", str(rec_folder), str(tmp_path / "shards"),
                         "--image-size", "32")
    assert packed.returncode == 0, packed.stderr
    assert read_meta(tmp_path / "shards")["counts"] == [10] * 4

    again = invoke_facekit("pack", tiny_faces, tmp_path / "rec2", "--format", "rec",
                           "--image-size", "32")
    assert "Wrote 40 images of 4 identities" in again.stdout, again.stderr
    repacked = load_index(tmp_path / "rec2", verify=False)
    assert [repacked.encoded(i) for i in range(40)] == [image for _, image in
                                                        _folder_images(tiny_faces)]

    prepared = run_facekit("prepare", str(rec_folder), str(tmp_path / "folders"), "--size",
                           "32")
    assert prepared.returncode == 0, prepared.stderr
    assert sorted(p.name for p in (tmp_path / "folders" / "2").iterdir())[0] == "2_0001.jpg"
    assert len(list((tmp_path / "folders").glob("*/*.jpg"))) == 40


def test_a_record_broken_after_indexing_costs_its_batch_not_the_run(rec_folder, tmp_path):
    """Training skips (and logs, naming the record) a batch whose record went bad after
    the index was built, as it does for an image file."""
    from facekit.data.pipeline import make_dataset

    copy = tmp_path / "later"
    copy.mkdir()
    for name in ("train.rec", "train.idx"):
        (copy / name).write_bytes((rec_folder / name).read_bytes())
    index = load_index(copy, use_cache=False, verify=False)
    data = bytearray((copy / "train.rec").read_bytes())
    data[int(index.paths[0]):int(index.paths[0]) + 4] = b"XXXX"  # after indexing
    (copy / "train.rec").write_bytes(bytes(data))
    batches = list(make_dataset(index, image_size=32, batch_size=10, training=False))
    assert len(batches) == 3  # the first batch of four is dropped, the run goes on
    assert sorted(np.concatenate([labels for _, labels in batches]).tolist()) == \
        sorted(index.labels[10:].tolist())
