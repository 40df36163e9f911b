"""The dataset index: every usable image of a dataset, cached between runs.

Listing millions of files takes minutes, so an index (item, class id) is saved
as a Feather table in facekit's cache folder, keyed by a fingerprint of its
source: for an identity folder, the modification times of the data folder and of
every identity folder, which change whenever a file or identity is added or
removed.  A stale index is never served, and a damaged cache counts as missing.

Building the index also checks every image the way training will read it
(TensorFlow's decoders, in parallel), so a zero-byte, non-image, corrupt or
truncated file is skipped and reported before training starts instead of
failing a day-long run.  Which format a path holds is decided by
``facekit.data.sources.open_source`` alone; this module indexes identity folders
and holds what every format's index shares.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from facekit.files import cache_dir, unique_temporary
from facekit.data.readers import FILES
from facekit.errors import FacekitError

# What TensorFlow decodes; anything else is converted by `facekit prepare`.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
CONVERTIBLE_EXTENSIONS = (".pgm", ".ppm", ".pbm", ".pnm", ".tif", ".tiff", ".webp")
INDEX_VERSION = 1
# Written by `facekit prepare --detect` beside the identity folders: facekit's own,
# not data, so an index without labels does not list it as a skipped file.
LANDMARKS_FILE = "landmarks.txt"


@dataclass
class DatasetIndex:
    """Every usable image with its class id; ``classes[id]`` is the identity's name.

    Args:
        paths: the items, one per image: file paths, or what ``reader`` reads
            (byte offsets of a ``.rec``'s records, facekit.data.recordio).
        labels: int32 class ids.
        classes: the identity of each class id.
        skipped: (name, reason) of what could not be used.
        reader: how an item's image is read (facekit.data.readers).
    """

    paths: np.ndarray
    labels: np.ndarray
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    reader: object = FILES

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, mask: np.ndarray) -> "DatasetIndex":
        return DatasetIndex(self.paths[mask], self.labels[mask], self.classes,
                            reader=self.reader)

    def encoded(self, position: int) -> bytes:
        """The encoded image at ``position``."""
        return self.reader.encoded(self.paths[position])

    def name(self, position: int) -> str:
        """How a message names the image at ``position``."""
        return self.reader.name(self.paths[position])

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


UNLABELLED = "(no identity)"  # the one class of an index without labels


def scan_folder(root: str | Path, labelled: bool = True) -> DatasetIndex:
    """List ``root/<identity>/<image>`` (or a glob2 pattern such as ``root/*/*.jpg``).

    Identities get ids 0..n-1 in sorted name order; files TensorFlow cannot
    decode by their extension, and identity folders without images, are
    listed as skipped.  Nothing is opened here.  Without ``labelled``, every
    image of ``root`` and of its sub-folders is listed, all of one class
    (``UNLABELLED``).
    """
    if is_pattern(root):
        return _scan_pattern(str(root), labelled)
    root = Path(root)
    require_folder(root)
    if not labelled:
        return _scan_unlabelled(root)
    identities = sorted(e.name for e in _entries(root)
                        if _is_dir(e) and not e.name.startswith("."))
    if not identities:
        raise FacekitError(f"The data folder '{root}' holds no identity sub-folders; expected "
                           "DATA/<identity>/<image>.jpg.")
    per_identity, skipped = {}, []
    for name in identities:
        files = sorted((e.name, e.path) for e in _entries(root / name) if _is_file(e))
        images = [path for file, path in files if file.lower().endswith(IMAGE_EXTENSIONS)]
        skipped += [(path, _unusable_reason(file)) for file, path in files
                    if not file.lower().endswith(IMAGE_EXTENSIONS)]
        if images:
            per_identity[name] = images
        else:
            skipped.append((str(root / name), "identity folder without images: add images "
                                              "or remove the folder"))
    return _from_identities(per_identity, skipped, root)


def holds_only_images(root: Path) -> bool:
    """Whether the folder ``root`` holds images but no sub-folders (data without labels)."""
    entries = [e for e in _entries(root) if not e.name.startswith(".")]
    return not any(_is_dir(e) for e in entries) and any(
        _is_file(e) and e.name.lower().endswith(IMAGE_EXTENSIONS) for e in entries)


def _scan_unlabelled(root: Path) -> DatasetIndex:
    files = []
    for entry in sorted(_entries(root), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if _is_file(entry) and entry.name != LANDMARKS_FILE:
            files.append((entry.name, entry.path))
        elif _is_dir(entry):
            files += [(e.name, e.path) for e in sorted(_entries(Path(entry.path)),
                                                      key=lambda e: e.name) if _is_file(e)]
    images = [path for name, path in files if name.lower().endswith(IMAGE_EXTENSIONS)]
    skipped = [(path, _unusable_reason(name)) for name, path in files
               if not name.lower().endswith(IMAGE_EXTENSIONS)]
    return _from_identities({UNLABELLED: images} if images else {}, skipped, root,
                            labelled=False)


def _entries(folder: Path) -> list:
    try:
        return list(os.scandir(folder))
    except OSError as exc:  # a symlink loop, a folder without read permission
        raise FacekitError(f"The folder '{folder}' cannot be listed: {exc.strerror}.") from None


def _is_dir(entry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop: neither a folder nor a file
        return False


def _is_file(entry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _scan_pattern(pattern: str, labelled: bool = True) -> DatasetIndex:
    import glob2

    per_identity: dict[str, list[str]] = {}
    for path in sorted(glob2.glob(pattern)):
        if os.path.isfile(path) and path.lower().endswith(IMAGE_EXTENSIONS):
            identity = os.path.basename(os.path.dirname(path)) if labelled else UNLABELLED
            per_identity.setdefault(identity, []).append(path)
    return _from_identities(dict(sorted(per_identity.items())), [], pattern, labelled)


def _from_identities(per_identity: dict[str, list[str]], skipped, root,
                     labelled: bool = True) -> DatasetIndex:
    if not per_identity and not labelled:
        raise FacekitError(f"'{root}' holds no images (JPEG, PNG, BMP or GIF), neither in "
                           "it nor in its sub-folders.")
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


def fingerprint(root: Path) -> str:
    """Changes when an identity folder or a file in one is added, removed, renamed or
    rewritten (each file's size and modification time are part of it): one stat per
    file, far less than the decoding a cached, verified index saves."""
    digest = hashlib.sha1(f"v{INDEX_VERSION} {root.stat().st_mtime_ns}".encode())
    for entry in sorted(_entries(root), key=lambda e: e.name):
        if _is_file(entry):  # images without identity (--no-labels)
            stat = entry.stat()
            digest.update(f"\n{entry.name} {stat.st_size} {stat.st_mtime_ns}".encode())
        elif _is_dir(entry):
            digest.update(f"\n{entry.name} {entry.stat().st_mtime_ns}".encode())
            for file in sorted(_entries(Path(entry.path)), key=lambda e: e.name):
                try:
                    stat = file.stat()
                except OSError:  # a broken link: its name is enough
                    digest.update(f"\n {file.name}".encode())
                    continue
                digest.update(f"\n {file.name} {stat.st_size} {stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def cache_paths(source: Path, variant: str = "") -> tuple[Path, Path]:
    """The cached table and metadata of the index of ``source`` (a folder or a file);
    ``variant`` tells apart indexes of one source read differently (without labels)."""
    key = hashlib.sha1((str(Path(source).resolve()) + variant).encode()).hexdigest()[:16]
    folder = cache_dir() / "index"
    return folder / f"{key}.feather", folder / f"{key}.json"


def folder_index(root: str | Path, *, use_cache: bool = True, verify: bool = True,
                 labelled: bool = True) -> DatasetIndex:
    """The index of an identity folder (or a glob2 pattern, never cached); without
    ``labelled``, of every image in it (``scan_folder``)."""
    if is_pattern(root):
        index = scan_folder(root, labelled)
        return verified(index) if verify else index
    root = Path(root)
    require_folder(root)
    return cached_index(root, fingerprint(root), lambda: scan_folder(root, labelled), FILES,
                        use_cache=use_cache, verify=verify,
                        variant="" if labelled else " unlabelled")


def cached_index(source: Path, key: str, scan: Callable[[], DatasetIndex], reader, *,
                 use_cache: bool, verify: bool, variant: str = "") -> DatasetIndex:
    """The index of ``source`` from the cache while ``key`` (its fingerprint) holds, else
    ``scan()``, verified with ``verify``, and cached.

    Several processes (the workers of a cluster on one machine or on a shared file
    system) may index the same source at once: each writes through its own temporary
    files, and the last complete write wins; a cache that cannot be read, whole and as
    written, counts as missing.
    """
    table_path, meta_path = cache_paths(source, variant)
    if use_cache:
        cached = _read_cache(table_path, meta_path, key, verify, reader)
        if cached is not None:
            return cached
    index = scan()
    if verify:
        index = verified(index)
    if use_cache:
        _write_cache(index, table_path, meta_path, key, verify)
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


def verified(index: DatasetIndex) -> DatasetIndex:
    """``index`` without the items whose image does not decode, each listed as skipped,
    and without identities left with no image."""
    failures = index.reader.verify(index.paths)
    if not failures:
        return index
    keep = np.array([p not in failures for p in index.paths.tolist()])
    skipped = index.skipped + sorted((index.reader.name(item), reason)
                                     for item, reason in failures.items())
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
                        skipped, reader=index.reader)


def _write_cache(index: DatasetIndex, table_path: Path, meta_path: Path, key: str,
                 verified_: bool) -> None:
    import pyarrow as pa
    import pyarrow.feather as feather

    table_path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"path": index.paths, "label": index.labels})
    digest = hashlib.sha1(np.ascontiguousarray(index.labels).tobytes()).hexdigest()
    with unique_temporary(table_path) as temporary:
        feather.write_feather(table, temporary, compression="lz4")
        os.replace(temporary, table_path)
    meta = {"fingerprint": key, "verified": verified_, "classes": index.classes,
            "skipped": index.skipped, "rows": len(index), "labels_sha1": digest}
    with unique_temporary(meta_path) as temporary:
        temporary.write_text(json.dumps(meta))
        os.replace(temporary, meta_path)


def _read_cache(table_path: Path, meta_path: Path, key: str, verify: bool, reader
                ) -> DatasetIndex | None:
    """The cached index, or None when it is missing, stale, damaged or of another write."""
    import pyarrow.feather as feather

    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") != key or not (meta.get("verified") or not verify):
            return None
        table = feather.read_table(table_path)
        paths, labels = table.column("path").to_numpy(), table.column("label").to_numpy()
        labels = labels.astype(np.int32)
        if (len(paths) != meta["rows"] or hashlib.sha1(
                np.ascontiguousarray(labels).tobytes()).hexdigest() != meta["labels_sha1"]
                or labels.min(initial=0) < 0 or labels.max(initial=-1) >= len(meta["classes"])):
            return None  # the table of another write than this metadata's
        return DatasetIndex(paths, labels, list(meta["classes"]),
                            [tuple(s) for s in meta["skipped"]], reader)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing or damaged: rebuilt
