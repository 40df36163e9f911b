"""Embeddings of images with a trained basic model, flip-augmented as insightface does."""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np

from facekit.console import progress_bar
from facekit.errors import FacekitError


def load_embedding_model(path: str | Path):
    """A basic model from a ``.keras`` file (basic or full model) or a run folder."""
    from facekit.model.build import embedding_model, load_model

    return embedding_model(load_model(path))


def model_image_size(model) -> int:
    return int(model.input_shape[1])


_FORWARD = weakref.WeakKeyDictionary()  # model -> {flip: traced forward pass}


def _forward(model, flip: bool):
    """The model's traced forward pass, kept so that verification after every
    epoch does not trace it again."""
    import tensorflow as tf

    functions = _FORWARD.setdefault(model, {})
    if flip not in functions:
        @tf.function(reduce_retracing=True)
        def forward(batch):
            if not flip:
                return model(batch, training=False)
            both = model(tf.concat([batch, tf.reverse(batch, axis=[2])], axis=0),
                         training=False)
            half = tf.shape(batch)[0]
            return both[:half] + both[half:]

        functions[flip] = forward
    return functions[flip]


def embed_dataset(model, images, *, flip: bool = True, count: int | None = None,
                  progress: bool = False, first_bad=None) -> np.ndarray:
    """Embeddings of a dataset of uint8 image batches.

    With ``flip`` each row is the sum of the raw embeddings of the image and
    its mirror image (insightface's test-time augmentation).  Rows are raw;
    verification L2-normalizes them.  ``first_bad()``, when given, names the first
    input that cannot be decoded (called only once decoding has failed).
    """
    import tensorflow as tf

    forward = _forward(model, flip)
    bar = progress_bar(count) if progress else None
    outputs = []
    try:
        for batch in images:
            outputs.append(forward(batch).numpy())
            if bar is not None:
                bar.add(len(outputs[-1]))
    except tf.errors.InvalidArgumentError as exc:
        named = first_bad() if first_bad is not None else None
        if named is not None:
            raise FacekitError(f"{named}; remove or convert it.") from None
        raise FacekitError("An image could not be decoded "
                           f"({exc.message.splitlines()[0][:200]}); remove or convert the "
                           "unreadable file.") from None
    if not outputs:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    return np.concatenate(outputs)


def embed_paths(model, paths, *, batch_size: int = 64, flip: bool = True,
                progress: bool = False) -> np.ndarray:
    """Embeddings of image files, in the order given."""
    from facekit.data.pipeline import make_dataset
    from facekit.data.index import DatasetIndex

    index = DatasetIndex(np.asarray(paths), np.zeros(len(paths), np.int32), [])
    dataset = make_dataset(index, image_size=model_image_size(model), batch_size=batch_size,
                           training=False, skip_unreadable=False)
    def first_bad():
        return next((f"'{path}' cannot be decoded as an image ({reason})" for path in paths
                     if (reason := undecodable(path, read=True))), None)

    return embed_dataset(model, dataset.map(lambda images, _: images), flip=flip,
                         count=len(paths), progress=progress, first_bad=first_bad)


def undecodable(item, read: bool = False) -> str | None:
    """Why one image (encoded bytes, or a file with ``read``) cannot be decoded, or None."""
    import tensorflow as tf

    try:
        contents = tf.io.read_file(str(item)) if read else tf.constant(item, tf.string)
        tf.io.decode_image(contents, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as exc:
        return exc.message.splitlines()[0][:200]
    return None


def embed_encoded(model, encoded: list[bytes], *, batch_size: int = 64, flip: bool = True,
                  progress: bool = False, source: str = "the set") -> np.ndarray:
    """Embeddings of encoded image bytes (as stored in insightface ``.bin`` files);
    ``source`` names them in the message about an image that cannot be decoded."""
    import tensorflow as tf

    from facekit.data.pipeline import decode_image

    size = model_image_size(model)
    dataset = (tf.data.Dataset.from_tensor_slices(tf.constant(encoded, dtype=tf.string))
               .map(lambda contents: decode_image(contents, size),
                    num_parallel_calls=tf.data.AUTOTUNE)
               .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    def first_bad():
        return next((f"Image {number} of {source} (pair {number // 2 + 1}) cannot be decoded "
                     f"({reason})" for number, item in enumerate(encoded)
                     if (reason := undecodable(item))), None)

    return embed_dataset(model, dataset, flip=flip, count=len(encoded), progress=progress,
                         first_bad=first_bad)


def embed_faces(model, paths, finder, *, batch_size: int = 64, flip: bool = True,
                progress: bool = False) -> tuple[np.ndarray, dict[int, str]]:
    """Embeddings of the face in each photo, found by ``finder`` (a
    facekit.data.detect.FaceFinder) and aligned at the model's input size.

    Returns the rows, in the order of ``paths``, and {position: why no face} for the
    photos without a usable face (their rows are zero: drop them, or embed the
    photo whole, as the caller's protocol says).
    """
    import tensorflow as tf

    size = model_image_size(model)
    forward = _forward(model, flip)
    rows = np.zeros((len(paths), model.output_shape[-1]), np.float32)
    missing: dict[int, str] = {}
    crops, positions = [], []

    def flush():
        if crops:
            rows[positions] = forward(tf.constant(np.stack(crops))).numpy()
            crops.clear()
            positions.clear()

    for position, crop, reason in finder.aligned_files(paths, size, progress=progress):
        if crop is None:
            missing[position] = reason
            continue
        crops.append(crop)
        positions.append(position)
        if len(crops) == batch_size:
            flush()
    flush()
    return rows, missing


def photo_sizes_differ(paths, size: int) -> bool:
    """Whether any image is not size×size (its header is read, not its pixels): such
    inputs are photos to detect faces in, not the aligned crops a model takes."""
    from PIL import Image, UnidentifiedImageError

    for path in paths:
        try:
            with Image.open(path) as image:
                if image.size != (size, size):
                    return True
        except (UnidentifiedImageError, OSError):
            continue  # the embedding step names unreadable files
    return False
