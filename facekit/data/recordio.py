"""insightface's MXNet RecordIO datasets (``train.rec`` + ``train.idx``), without MXNet.

The framing (dmlc-core's recordio): every record starts on a 4-byte boundary
with the magic ``0xced7230a`` and a word holding a 3-bit continuation flag
and a 29-bit length; the payload follows, padded to 4 bytes.  A payload that
contains the magic at an aligned position is written in parts (flags 1, 2,
3), and the magic between the parts is left out.  ``train.idx`` lists
``key<TAB>byte offset`` per record.

The payload (MXNet's image record): a header ``flag, label, id, id2``
(uint32, float32, uint64, uint64); when ``flag`` > 0 the label is the
``flag`` float32 values that follow it.  Then the encoded image.

insightface's layout: record 0 is a header whose label ``(a, b)`` says the
images are records ``1 .. a-1`` and the identity records ``a .. b-1`` (each
labelled with its image range).  Without it (flag 0) every record is an
image.  An image's identity is its label, or the first value of it.

The files come from the internet: every offset, length and flag is checked
against the file before it is used; a bad record is skipped and named.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facekit.data.index import INDEX_VERSION, DatasetIndex, cached_index
from facekit.errors import FacekitError
from facekit.files import read_text

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
HEADER = struct.Struct("<IfQQ")  # flag, label, id, id2 (MXNet's IRHeader)
LENGTH_BITS = 29
REC_FILE, IDX_FILE, PROPERTY_FILE = "train.rec", "train.idx", "property"


def is_recordio(path) -> bool:
    """Whether ``path`` is a folder holding insightface's ``train.rec``."""
    return (Path(path) / REC_FILE).is_file()


class RecordError(ValueError):
    """A record that cannot be read; the message names it."""


def read_idx(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(keys, byte offsets) of a ``.idx`` file, in key order."""
    if not path.is_file():
        raise FacekitError(f"'{path}' is missing: a .rec file needs the .idx written with it "
                           "(key<TAB>offset per record).")
    try:
        table = np.loadtxt(path, dtype=np.int64, delimiter="\t", ndmin=2)
    except ValueError as exc:
        raise FacekitError(f"'{path}' is not a RecordIO index (key<TAB>offset per line): "
                           f"{exc}.") from None
    if table.shape[1] != 2 or len(table) == 0:
        raise FacekitError(f"'{path}' is not a RecordIO index (key<TAB>offset per line).")
    order = np.argsort(table[:, 0], kind="stable")
    return table[order, 0], table[order, 1]


class RecordFile:
    """A ``.rec`` file opened read-only (memory-mapped), read by byte offset."""

    def __init__(self, path: Path):
        self.path = Path(path)
        size = self.path.stat().st_size
        self.data = np.memmap(self.path, np.uint8, mode="r") if size else np.zeros(0, np.uint8)

    def payload(self, offset: int) -> bytes:
        """The payload of the record at ``offset``, its parts joined."""
        parts, position = [], int(offset)
        while True:
            flag, length = self._frame(position)
            start = position + 8
            parts.append(self.data[start:start + length].tobytes())
            position = start + (length + 3) // 4 * 4
            if flag in (0, 3):
                break
            if flag not in (1, 2) or (flag == 1 and len(parts) > 1):
                raise RecordError(f"{self.path.name} record at byte {offset}: continuation "
                                  f"flag {flag} out of order")
            if len(parts) > 1 << 16:
                raise RecordError(f"{self.path.name} record at byte {offset}: too many parts")
        if len(parts) > 1 and flag != 3:
            raise RecordError(f"{self.path.name} record at byte {offset}: unterminated parts")
        return _MAGIC_BYTES.join(parts)

    def _frame(self, position: int) -> tuple[int, int]:
        if position < 0 or position % 4 or position + 8 > len(self.data):
            raise RecordError(f"{self.path.name} record at byte {position}: outside the file "
                              f"({len(self.data)} bytes)")
        magic, word = struct.unpack("<II", self.data[position:position + 8].tobytes())
        if magic != MAGIC:
            raise RecordError(f"{self.path.name} record at byte {position}: no record starts "
                              "here (wrong magic number)")
        length = word & ((1 << LENGTH_BITS) - 1)
        if position + 8 + length > len(self.data):
            raise RecordError(f"{self.path.name} record at byte {position}: truncated "
                              f"({length} bytes announced, {len(self.data) - position - 8} left)")
        return word >> LENGTH_BITS, length

    def image(self, offset: int) -> bytes:
        """The encoded image of the record at ``offset``."""
        return unpack(self.payload(offset), f"{self.path.name} record at byte {offset}")[1]

    def images(self, offsets) -> np.ndarray:
        """Encoded images of many records (for tf.numpy_function); a record that cannot
        be read fails the call with its name."""
        return np.array([self.image(int(offset)) for offset in offsets], dtype=object)


def open_record_file(path: str) -> RecordFile:
    """A shared ``RecordFile`` per path (one memory map for many reads), mapped anew when
    the file changes size or time."""
    stat = Path(path).stat()
    return _mapped(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _mapped(path: str, size: int, mtime_ns: int) -> RecordFile:
    return RecordFile(Path(path))


def unpack(payload: bytes, name: str = "record") -> tuple[np.ndarray, bytes]:
    """(label values, encoded image) of an image record's payload."""
    if len(payload) < HEADER.size:
        raise RecordError(f"{name}: {len(payload)} bytes, shorter than a record header")
    flag, label, _, _ = HEADER.unpack_from(payload)
    if flag == 0:
        return np.array([label], np.float32), payload[HEADER.size:]
    end = HEADER.size + 4 * flag
    if end > len(payload):
        raise RecordError(f"{name}: its header announces {flag} labels that the record "
                          "does not hold")
    return np.frombuffer(payload[HEADER.size:end], "<f4").copy(), payload[end:]


def pack_record(label, image: bytes = b"", key: int = 0) -> bytes:
    """The payload of an image record: one float label, or several."""
    values = np.atleast_1d(np.asarray(label, "<f4"))
    if values.size == 1 and not isinstance(label, (list, tuple, np.ndarray)):
        return HEADER.pack(0, float(values[0]), key, 0) + image
    return HEADER.pack(values.size, 0.0, key, 0) + values.tobytes() + image


def frame(payload: bytes) -> bytes:
    """``payload`` framed as dmlc-core writes it: split where the magic occurs at an
    aligned position, each part with its flag and length, padded to 4 bytes."""
    cuts = [i for i in range(0, len(payload) // 4 * 4, 4) if payload[i:i + 4] == _MAGIC_BYTES]
    out, start = bytearray(), 0
    for number, cut in enumerate(cuts):
        out += struct.pack("<II", MAGIC, ((1 if number == 0 else 2) << LENGTH_BITS)
                           | (cut - start)) + payload[start:cut]
        start = cut + 4
    last = payload[start:]
    out += struct.pack("<II", MAGIC, ((3 if cuts else 0) << LENGTH_BITS) | len(last)) + last
    return bytes(out + b"\0" * (-len(out) % 4))


def write_recordio(folder, images, image_size: int = 112) -> dict:
    """Write insightface's layout to ``folder``: ``images`` is an iterable of (identity
    number, encoded image) grouped by identity, written as it comes.  The header record
    (key 0) and the identity records follow the images in the file; readers find every
    record through ``train.idx``.  Returns {"images": n, "classes": c}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if is_recordio(folder):
        raise FacekitError(f"'{folder}' already holds a {REC_FILE}; choose another folder.")
    ranges: dict[int, list[int]] = {}
    lines = []
    with open(folder / REC_FILE, "wb") as rec:
        def put(key, payload):
            lines.append((key, rec.tell()))
            rec.write(frame(payload))

        key = 0
        for key, (identity, image) in enumerate(images, start=1):
            identity = int(identity)
            if identity in ranges and ranges[identity][1] != key:
                raise ValueError(f"identity {identity} comes back after another: group the "
                                 "images by identity")
            ranges.setdefault(identity, [key, key])[1] = key + 1
            put(key, pack_record(float(identity), image, key))
        first_identity = key + 1
        for number, identity in enumerate(ranges):
            put(first_identity + number,
                pack_record([float(v) for v in ranges[identity]], b"", first_identity + number))
        put(0, pack_record([float(first_identity), float(first_identity + len(ranges))]))
    (folder / IDX_FILE).write_text("".join(f"{k}\t{o}\n" for k, o in sorted(lines)))
    (folder / PROPERTY_FILE).write_text(f"{len(ranges)},{image_size},{image_size}\n")
    return {"images": first_identity - 1, "classes": len(ranges)}


@dataclass
class RecordIndex:
    """The image records of a ``.rec``: byte offsets, identity labels as stored, and
    the records that could not be used."""

    offsets: np.ndarray  # int64
    labels: np.ndarray  # int64, the stored identity numbers
    skipped: list[tuple[str, str]] = field(default_factory=list)
    image_size: int | None = None  # from ``property``, when present


def scan_recordio(folder) -> RecordIndex:
    """Index the image records of ``folder/train.rec`` from ``train.idx``, checking
    every record's framing and header."""
    folder = Path(folder)
    keys, offsets = read_idx(folder / IDX_FILE)
    rec = RecordFile(folder / REC_FILE)
    image_size = _property_size(folder / PROPERTY_FILE)
    by_key = dict(zip(keys.tolist(), offsets.tolist()))
    image_keys = keys
    if 0 in by_key:
        try:
            header = rec.payload(by_key[0])
            labels0 = unpack(header, "record 0")[0]
        except RecordError as exc:
            raise FacekitError(f"'{folder / REC_FILE}' does not match its index: {exc}.") \
                from None
        if HEADER.unpack_from(header)[0] > 0:  # insightface's header record: images are keys 1 .. a-1
            first_identity = int(labels0[0])
            image_keys = keys[(keys >= 1) & (keys < first_identity)]
    skipped, kept_offsets, kept_labels = [], [], []
    fast = _fast_headers(rec, np.array([by_key[k] for k in image_keys.tolist()], np.int64))
    for key, (offset, label) in zip(image_keys.tolist(), fast):
        if label is None:  # not a plain one-part record: read it the careful way
            try:
                label = float(unpack(rec.payload(offset), f"record {key}")[0][0])
            except RecordError as exc:
                skipped.append((f"{REC_FILE} record {key}", str(exc)))
                continue
        if not np.isfinite(label) or label < 0 or label != int(label):
            skipped.append((f"{REC_FILE} record {key}",
                            f"identity label {label} is not a whole number"))
            continue
        kept_offsets.append(offset)
        kept_labels.append(int(label))
    if not kept_offsets:
        raise FacekitError(f"'{folder / REC_FILE}' holds no readable image records.")
    return RecordIndex(np.array(kept_offsets, np.int64), np.array(kept_labels, np.int64),
                       skipped, image_size)


_FAST_BLOCK = 1 << 20  # records per vectorized read


def _fast_headers(rec: RecordFile, offsets: np.ndarray):
    """(offset, first label value or None) per record, vectorized over the memory map
    for well-formed one-part records; None sends a record to the careful reader."""
    if len(offsets) > _FAST_BLOCK:
        return [row for block in range(0, len(offsets), _FAST_BLOCK)
                for row in _fast_headers(rec, offsets[block:block + _FAST_BLOCK])]
    data, size = rec.data, len(rec.data)
    ok = (offsets >= 0) & (offsets % 4 == 0) & (offsets + 8 + HEADER.size + 4 <= size)
    safe = np.where(ok, offsets, 0)
    words = data[safe[:, None] + np.arange(8 + HEADER.size + 4)].view("<u4")  # 9 words each
    magic, lrec, flag = words[:, 0], words[:, 1], words[:, 2]
    length = lrec & ((1 << LENGTH_BITS) - 1)
    ok &= (magic == MAGIC) & ((lrec >> LENGTH_BITS) == 0) & (offsets + 8 + length <= size)
    ok &= length >= HEADER.size + 4 * flag.astype(np.int64)
    label = np.where(flag == 0, words[:, 3].view("<f4"), words[:, 8].view("<f4"))
    return [(int(o), float(v) if good else None) for o, v, good in zip(offsets, label, ok)]


def _property_size(path: Path) -> int | None:
    """The image size ``property`` states (``classes,height,width``), when it does."""
    try:
        fields = read_text(path, "The RecordIO property file").strip().split(",")
        return int(fields[1]) if len(fields) >= 3 and fields[1] == fields[2] else None
    except (FacekitError, ValueError):  # missing or unreadable: no size stated
        return None


class RecordReader:
    """Items are byte offsets of the image records of one ``.rec`` file
    (facekit.data.readers describes the interface)."""

    def __init__(self, path):
        self.path = str(path)

    def __repr__(self) -> str:
        return f"RecordReader({self.path!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RecordReader) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def encoded(self, item) -> bytes:
        return open_record_file(self.path).image(int(item))

    def name(self, item) -> str:
        return f"{self.path} record at byte {int(item)}"

    def loader(self, image_size: int):
        """Each batch's records read from the memory map; a record that cannot be read
        fails its batch with the record named."""
        import tensorflow as tf

        from facekit.data.pipeline import decode_batch

        rec = open_record_file(self.path)

        def load(offsets):
            encoded = tf.numpy_function(rec.images, [offsets], tf.string, stateful=False)
            return decode_batch(tf.ensure_shape(encoded, offsets.shape), image_size)

        return load

    def verify(self, items) -> dict:
        """{offset: reason} for the records whose image does not decode (unreadable
        records are found by the scan already)."""
        import tensorflow as tf

        rec = open_record_file(self.path)

        def check(offset):
            contents = tf.numpy_function(lambda o: rec.image(int(o)), [offset], tf.string,
                                         stateful=False)
            image = tf.io.decode_image(contents, channels=3, expand_animations=False)
            return offset, tf.shape(image)

        dataset = (tf.data.Dataset.from_tensor_slices(np.asarray(items, np.int64))
                   .map(check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
                   .ignore_errors().batch(4096))
        good = {int(o) for batch, _ in dataset.as_numpy_iterator() for o in batch}
        failures = {}
        for offset in (int(o) for o in items if int(o) not in good):
            try:
                rec.image(offset)
                failures[offset] = "corrupt or truncated image in the record"
            except RecordError as exc:
                failures[offset] = str(exc)
        return failures


def recordio_index(folder, *, use_cache: bool = True, verify: bool = True) -> DatasetIndex:
    """The index of ``folder/train.rec``: its image records, checked (framing, header,
    and with ``verify`` the image decoded) and cached like a folder's."""
    folder = Path(folder)
    rec = folder / REC_FILE
    stats = [(rec.stat().st_size, rec.stat().st_mtime_ns)]
    if (folder / IDX_FILE).is_file():
        stats.append((folder / IDX_FILE).stat().st_mtime_ns)
    key = hashlib.sha1(f"v{INDEX_VERSION} recordio {stats}".encode()).hexdigest()
    reader = RecordReader(rec)

    def scan() -> DatasetIndex:
        scanned = scan_recordio(folder)
        numbers, labels = np.unique(scanned.labels, return_inverse=True)
        width = len(str(int(numbers[-1])))
        return DatasetIndex(scanned.offsets, labels.astype(np.int32),
                            [str(int(n)).zfill(width) for n in numbers], scanned.skipped,
                            reader)

    return cached_index(rec, key, scan, reader, use_cache=use_cache, verify=verify)
