"""The dataset index: every usable image of an identity folder, cached between runs.

Listing millions of files takes minutes, so the index (path, class id) is
saved as a Feather table in facekit's cache folder, keyed by a fingerprint of
the folder: the modification times of the data folder and of every identity
folder, which change whenever a file or identity is added or removed.  A
stale index is never served.

Building the index also checks every image the way training will read it
(TensorFlow's decoders, in parallel), so a zero-byte, non-image, corrupt or
truncated file is skipped and reported before training starts instead of
failing a day-long run.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facekit.errors import FacekitError

# What TensorFlow decodes; anything else is converted by `facekit prepare`.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
CONVERTIBLE_EXTENSIONS = (".pgm", ".ppm", ".pbm", ".pnm", ".tif", ".tiff", ".webp")
INDEX_VERSION = 1


@dataclass
class DatasetIndex:
    """Every usable image with its class id; ``classes[id]`` is the identity's folder name.

    ``paths`` are image files, or, when ``records`` names a ``.rec`` file, the byte
    offsets of its image records (facekit.data.recordio).
    """

    paths: np.ndarray  # str, or int64 offsets into ``records``
    labels: np.ndarray  # int32
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    records: str | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, mask: np.ndarray) -> "DatasetIndex":
        return DatasetIndex(self.paths[mask], self.labels[mask], self.classes,
                            records=self.records)

    def encoded(self, position: int) -> bytes:
        """The encoded image at ``position``: a file's bytes or a record's image."""
        if self.records is None:
            return Path(self.paths[position]).read_bytes()
        from facekit.data.recordio import open_record_file

        return open_record_file(self.records).image(int(self.paths[position]))

    def name(self, position: int) -> str:
        """How a message names the image at ``position``."""
        if self.records is None:
            return str(self.paths[position])
        return f"{self.records} record at byte {int(self.paths[position])}"

    def counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.classes))

    def summary(self, listed: int = 10) -> str:
        counts = self.counts()
        lines = [f"{len(self)} images of {len(self.classes)} identities; images per identity: "
                 f"min {counts.min()}, median {int(np.median(counts))}, max {counts.max()}",
                 f"skipped {len(self.skipped)} file(s)"]
        for path, reason in self.skipped[:listed]:
            lines.append(f"  {path}: {reason}")
        if len(self.skipped) > listed:
            lines.append(f"  ... and {len(self.skipped) - listed} more")
        return "\n".join(lines)


def scan_folder(root: str | Path) -> DatasetIndex:
    """List ``root/<identity>/<image>`` (or a glob2 pattern such as ``root/*/*.jpg``).

    Identities get ids 0..n-1 in sorted name order; files TensorFlow cannot
    decode by their extension, and identity folders without images, are
    listed as skipped.  Nothing is opened here.
    """
    if is_pattern(root):
        return _scan_pattern(str(root))
    root = Path(root)
    require_folder(root)
    identities = sorted(e.name for e in os.scandir(root)
                        if e.is_dir() and not e.name.startswith("."))
    if not identities:
        raise FacekitError(f"The data folder '{root}' holds no identity sub-folders; expected "
                           "DATA/<identity>/<image>.jpg.")
    per_identity, skipped = {}, []
    for name in identities:
        files = sorted((e.name, e.path) for e in os.scandir(root / name) if e.is_file())
        images = [path for file, path in files if file.lower().endswith(IMAGE_EXTENSIONS)]
        skipped += [(path, _unusable_reason(file)) for file, path in files
                    if not file.lower().endswith(IMAGE_EXTENSIONS)]
        if images:
            per_identity[name] = images
        else:
            skipped.append((str(root / name), "identity folder without images: add images "
                                              "or remove the folder"))
    return _from_identities(per_identity, skipped, root)


def _scan_pattern(pattern: str) -> DatasetIndex:
    import glob2

    per_identity: dict[str, list[str]] = {}
    for path in sorted(glob2.glob(pattern)):
        if os.path.isfile(path) and path.lower().endswith(IMAGE_EXTENSIONS):
            per_identity.setdefault(os.path.basename(os.path.dirname(path)), []).append(path)
    return _from_identities(dict(sorted(per_identity.items())), [], pattern)


def _from_identities(per_identity: dict[str, list[str]], skipped, root) -> DatasetIndex:
    if not per_identity:
        raise FacekitError(f"'{root}' holds no images in identity sub-folders; expected "
                           "DATA/<identity>/<image>.jpg (JPEG, PNG, BMP or GIF; convert other "
                           "formats with `facekit prepare`).")
    classes = list(per_identity)
    paths = [p for name in classes for p in per_identity[name]]
    labels = np.repeat(np.arange(len(classes), dtype=np.int32),
                       [len(per_identity[name]) for name in classes])
    return DatasetIndex(np.array(paths), labels, classes, skipped)


def _unusable_reason(file_name: str) -> str:
    if file_name.lower().endswith(CONVERTIBLE_EXTENSIONS):
        return "format TensorFlow cannot decode: convert the folder with `facekit prepare`"
    return "not an image file (by its extension)"


def verify_images(paths) -> dict[str, str]:
    """Decode every image as training will; returns {path: reason} for those that fail.

    Files are decoded in parallel by tf.data; those whose decoding fails are
    dropped by ``ignore_errors``, so the failures are the paths missing from
    the output.
    """
    import tensorflow as tf

    def check(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return path, tf.shape(image)  # using the image keeps the decode from being pruned

    dataset = (tf.data.Dataset.from_tensor_slices(np.asarray(paths, dtype=str))
               .map(check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
               .ignore_errors().batch(4096))
    good = {p.decode() for batch, _ in dataset.as_numpy_iterator() for p in batch}
    return {p: _failure_reason(p) for p in paths if p not in good}


def verify_records(records: str, offsets) -> dict[int, str]:
    """Decode the image of every record at ``offsets``; {offset: reason} for those that
    fail (unreadable records are found by the scan already)."""
    import tensorflow as tf

    from facekit.data.recordio import RecordError, open_record_file

    rec = open_record_file(records)

    def read(offset):
        return rec.image(int(offset))

    def check(offset):
        contents = tf.numpy_function(read, [offset], tf.string, stateful=False)
        image = tf.io.decode_image(contents, channels=3, expand_animations=False)
        return offset, tf.shape(image)

    dataset = (tf.data.Dataset.from_tensor_slices(np.asarray(offsets, np.int64))
               .map(check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
               .ignore_errors().batch(4096))
    good = {int(o) for batch, _ in dataset.as_numpy_iterator() for o in batch}
    failures = {}
    for offset in (int(o) for o in offsets if int(o) not in good):
        try:
            rec.image(offset)
            failures[offset] = "corrupt or truncated image in the record"
        except RecordError as exc:
            failures[offset] = str(exc)
    return failures


def _failure_reason(path: str) -> str:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    if size == 0:
        return "empty file (0 bytes): remove it or copy it again"
    if not (head.startswith((b"\xff\xd8", b"\x89PNG", b"BM", b"GIF8"))):
        return "not an image file (unknown content): remove it"
    return "corrupt or truncated image: remove it or copy it again"


def fingerprint(root: Path) -> str:
    """Changes when an identity folder or a file in one is added, removed or renamed."""
    digest = hashlib.sha1(f"v{INDEX_VERSION} {root.stat().st_mtime_ns}".encode())
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir():
            digest.update(f"\n{entry.name} {entry.stat().st_mtime_ns}".encode())
    return digest.hexdigest()


def cache_paths(root: Path) -> tuple[Path, Path]:
    from facekit.data.demo import cache_dir

    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    folder = cache_dir() / "index"
    return folder / f"{key}.feather", folder / f"{key}.json"


def load_index(root: str | Path, *, use_cache: bool = True, verify: bool = True) -> DatasetIndex:
    """The folder's index: from the cache when the folder is unchanged, else scanned anew.

    A folder holding insightface's ``train.rec`` is indexed by its records.
    """
    from facekit.data.recordio import is_recordio

    if not is_pattern(root) and is_recordio(root):
        return load_recordio_index(Path(root), use_cache=use_cache, verify=verify)
    if is_pattern(root):
        index = scan_folder(root)
        return _verified(index) if verify else index
    root = Path(root)
    require_folder(root)
    key = fingerprint(root)
    table_path, meta_path = cache_paths(root)
    if use_cache and meta_path.exists() and table_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta["fingerprint"] == key and (meta["verified"] or not verify):
            return _read_table(table_path, meta)
    index = scan_folder(root)
    if verify:
        index = _verified(index)
    if use_cache:
        _write_table(index, table_path, meta_path, key, verify)
    return index


def load_recordio_index(folder: Path, *, use_cache: bool = True, verify: bool = True
                        ) -> DatasetIndex:
    """The index of ``folder/train.rec``: its image records, checked (framing, header,
    and with ``verify`` the image decoded) and cached like a folder's."""
    from facekit.data.recordio import IDX_FILE, REC_FILE, scan_recordio

    rec = folder / REC_FILE
    stats = [(rec.stat().st_size, rec.stat().st_mtime_ns)]
    if (folder / IDX_FILE).is_file():
        stats.append((folder / IDX_FILE).stat().st_mtime_ns)
    key = hashlib.sha1(f"v{INDEX_VERSION} recordio {stats}".encode()).hexdigest()
    table_path, meta_path = cache_paths(rec)
    if use_cache and meta_path.exists() and table_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta["fingerprint"] == key and (meta["verified"] or not verify):
            return _read_table(table_path, meta, records=str(rec))
    scanned = scan_recordio(folder)
    numbers, labels = np.unique(scanned.labels, return_inverse=True)
    width = len(str(int(numbers[-1])))
    index = DatasetIndex(scanned.offsets, labels.astype(np.int32),
                         [str(int(n)).zfill(width) for n in numbers], scanned.skipped,
                         records=str(rec))
    if verify:
        index = _verified(index)
    if use_cache:
        _write_table(index, table_path, meta_path, key, verify)
    return index


def is_pattern(root) -> bool:
    """Whether ``--data`` is a glob2 pattern (``faces/**/*.jpg``) rather than a folder."""
    return any(char in str(root) for char in "*?[")


def require_folder(root: Path) -> None:
    if root.is_file():
        raise FacekitError(f"'{root}' is a file, not a folder of identity sub-folders "
                           "(DATA/<identity>/<image>).")
    if not root.is_dir():
        raise FacekitError(f"The data folder '{root}' does not exist; expected a folder of "
                           "identity sub-folders (DATA/<identity>/<image>).")


def _verified(index: DatasetIndex) -> DatasetIndex:
    if index.records is None:
        failures = verify_images(index.paths)
    else:
        failures = verify_records(index.records, index.paths)
    if not failures:
        return index
    keep = np.array([p not in failures for p in index.paths])
    named = {p: f"{index.records} record at byte {p}" for p in failures} \
        if index.records else {p: p for p in failures}
    skipped = index.skipped + sorted((named[p], reason) for p, reason in failures.items())
    labels = index.labels[keep]
    present = np.unique(labels)
    if len(present) == 0:
        raise FacekitError("None of the images could be decoded; see the skipped files: "
                           + "; ".join(f"{p}: {r}" for p, r in skipped[:3]))
    for lost in sorted(set(range(len(index.classes))) - set(present.tolist())):
        skipped.append((index.classes[lost], "identity without readable images: dropped"))
    remap = np.full(len(index.classes), -1, np.int32)
    remap[present] = np.arange(len(present), dtype=np.int32)
    return DatasetIndex(index.paths[keep], remap[labels], [index.classes[i] for i in present],
                        skipped, records=index.records)


def _write_table(index, table_path: Path, meta_path: Path, key: str, verified: bool) -> None:
    import pyarrow as pa
    import pyarrow.feather as feather

    table_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = table_path.with_suffix(".tmp")
    feather.write_feather(pa.table({"path": index.paths, "label": index.labels}), temporary,
                          compression="lz4")
    os.replace(temporary, table_path)
    meta_path.write_text(json.dumps({"fingerprint": key, "verified": verified,
                                     "classes": index.classes, "skipped": index.skipped}))


def _read_table(table_path: Path, meta: dict, records: str | None = None) -> DatasetIndex:
    import pyarrow.feather as feather

    table = feather.read_table(table_path)
    return DatasetIndex(table.column("path").to_numpy(), table.column("label").to_numpy(),
                        meta["classes"], [tuple(s) for s in meta["skipped"]], records)
