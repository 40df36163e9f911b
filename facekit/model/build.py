"""Model assembly: backbone -> pooling -> dropout -> embedding -> head.

The *basic model* maps raw [0, 255] pixels to the embedding and is what
verification and deployment use; the *training model* adds the head.
"""

from __future__ import annotations

import importlib
import json
import zipfile
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

import keras

from facekit.config import POOLINGS
from facekit.fit.devices import dtype_policy
from facekit.errors import FacekitError
from facekit.registry import Registry, get_registry

EMBEDDING_LAYER = "embedding"
BACKBONE_LAYER = "backbone"
BASIC_MODEL = "basic_model"


class FaceModels(NamedTuple):
    basic_model: keras.Model
    model: keras.Model


def build_model(num_classes: int, backbone: str = "mobilenetv2", head: str = "normdense", *,
                image_size: int = 112, embedding_size: int = 512, dropout: float = 0.1,
                pooling: str = "gap", backbone_options: dict | None = None,
                head_options: dict | None = None, augmentation=None, seed: int = 0,
                registry: Registry | None = None) -> FaceModels:
    """Build the basic (embedding) model and the training model around it, by the
    names of their components (for your own training loop)."""
    from facekit.plan import resolve

    if pooling not in POOLINGS:
        raise FacekitError(f"Unknown pooling '{pooling}'; use {' or '.join(POOLINGS)}.")
    registry = registry or get_registry()
    basic_model = build_basic_model(
        resolve(registry, "backbone", backbone, backbone_options), image_size=image_size,
        embedding_size=embedding_size, dropout=dropout, pooling=pooling)
    return FaceModels(basic_model, build_training_model(
        basic_model, num_classes, resolve(registry, "head", head, head_options),
        augmentation=augmentation, seed=seed))


def build_basic_model(backbone, *, image_size: int = 112, embedding_size: int = 512,
                      dropout: float = 0.1, pooling: str = "gap") -> keras.Model:
    """image [0, 255] -> backbone -> pooling -> dropout -> float32 embedding.

    ``backbone`` is a resolved component (facekit.plan.Resolved).
    """
    input_shape = (image_size, image_size, 3)
    inputs = keras.Input(shape=input_shape, name="image")
    backbone_model = backbone.build(input_shape)
    backbone_model.name = BACKBONE_LAYER  # one name to find (and freeze) whatever the plugin
    features = backbone_model(inputs)
    if pooling == "gap":
        features = keras.layers.GlobalAveragePooling2D(name="pooling")(features)
    else:
        features = keras.layers.Flatten(name="pooling")(features)
    features = keras.layers.Dropout(dropout, name="dropout")(features)
    with dtype_policy("float32"):  # embedding and head stay float32 under mixed precision
        embedding = keras.layers.Dense(embedding_size, name=EMBEDDING_LAYER)(features)
    return keras.Model(inputs, embedding, name=BASIC_MODEL)


def build_training_model(basic_model: keras.Model, num_classes: int, head, *,
                         augmentation=None, seed: int = 0, state: dict | None = None
                         ) -> keras.Model:
    """image -> augmentation layers -> basic model -> a new head (a resolved component)
    -> the loss's state, if it keeps any (facekit.model.state).

    The augmentation layers (see facekit.data.augment) act only while training.
    Staged training calls this again to put a new head on a trained basic model.
    """
    from facekit.data.augment import augmentation_layers
    from facekit.model.state import STATE_LAYER, LossState

    images = keras.Input(shape=basic_model.input_shape[1:], name="image")
    augmented = images
    for layer in augmentation_layers(augmentation, seed) if augmentation else []:
        augmented = layer(augmented)
    with dtype_policy("float32"):  # so is the head: the loss gets float32 scores
        outputs = head.build(num_classes)(basic_model(augmented))
        if state:
            outputs = LossState(state, name=STATE_LAYER)(outputs)
    return keras.Model(images, outputs, name="face_model")


def head_layer(model: keras.Model):
    """The head of a training model: its last layer before any loss state."""
    from facekit.model.state import STATE_LAYER

    return [layer for layer in model.layers if layer.name != STATE_LAYER][-1]


def freeze(basic_model: keras.Model, part: str) -> None:
    """Make ``part`` (none, backbone or basic_model) untrainable and the rest trainable.

    Keras takes a change of ``trainable`` into account at the next ``compile``.
    A frozen BatchNorm layer also runs in inference mode, so its statistics stay.
    """
    basic_model.trainable = part != "basic_model"
    if part == "backbone":
        basic_model.get_layer(BACKBONE_LAYER).trainable = False


def init_basic_model(basic_model: keras.Model, source: str | Path) -> None:
    """Load the weights of a trained basic model into ``basic_model`` (staged training).

    ``source`` is a run folder, a ``.keras`` model (basic or full) or a
    ``.weights.h5`` file of a basic model with the same architecture.
    """
    source = model_file(source)
    if not source.is_file():
        raise FacekitError(f"--init-from '{source}' does not exist; pass a run folder, a "
                           ".keras model or a .weights.h5 file.")
    try:
        if source.name.endswith(".weights.h5"):
            basic_model.load_weights(source)
            return
        if source.suffix != ".keras":
            raise FacekitError(f"--init-from '{source}' is neither a .keras model nor a "
                               ".weights.h5 file.")
        trained = embedding_model(load_model(source))
        basic_model.set_weights(trained.get_weights())
    except ValueError as exc:
        raise FacekitError(
            f"The weights in '{source}' do not fit this run's basic model; use the "
            f"--backbone, its options and --embedding-size it was trained with "
            f"({str(exc).splitlines()[0]}).") from None


def embedding_model(model: keras.Model) -> keras.Model:
    """The basic model: ``model`` itself, the one inside a training model, or the part
    of a flat model up to its ``embedding`` layer."""
    if model.name == BASIC_MODEL:
        return model
    names = [layer.name for layer in model.layers]
    if BASIC_MODEL in names:
        return model.get_layer(BASIC_MODEL)
    if EMBEDDING_LAYER in names:
        return keras.Model(model.inputs, model.get_layer(EMBEDDING_LAYER).output,
                           name=BASIC_MODEL)
    raise FacekitError(f"The model '{model.name}' has no '{EMBEDDING_LAYER}' layer; "
                       "pass a model built by facekit.")


def model_file(path: str | Path) -> Path:
    """``path`` itself, or the basic_model.keras of a run folder."""
    path = Path(path)
    return path / "basic_model.keras" if path.is_dir() else path


def load_model(path: str | Path, compile: bool = False) -> keras.Model:
    """Load a ``.keras`` model saved by facekit, importing its plugins' Keras objects."""
    path = model_file(path)
    if not path.is_file():
        raise FacekitError(f"The model file '{path}' does not exist; pass a .keras file "
                           "or a run folder that holds basic_model.keras.")
    import_custom_objects(path)
    return keras.saving.load_model(path, compile=compile)


# Modules of facekit 0.1 whose Keras objects now live elsewhere, so that models
# and checkpoints saved before the move still load.
_MOVED = {"facekit.optimizers": "facekit.fit.optimizers"}


def import_custom_objects(path: Path) -> None:
    """Import the plugin modules that define the model's custom Keras objects.

    Keras finds a custom class only once its module has registered it; the
    saved config names that module.  Only modules of installed facekit plugin
    packages are imported.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
        raise FacekitError(f"'{path}' is not a Keras 3 .keras model file ({exc}).") from None
    allowed = {"facekit", "facekit_plugins"} | {
        ep.value.split(":")[0].split(".")[0]
        for ep in metadata.entry_points(group="facekit")}
    for module in sorted(_config_modules(config)):
        if module.split(".")[0] in allowed:
            importlib.import_module(_MOVED.get(module, module))


def _config_modules(node) -> set[str]:
    found = set()
    if isinstance(node, dict):
        if isinstance(node.get("module"), str) and node.get("registered_name"):
            found.add(node["module"])
        for value in node.values():
            found |= _config_modules(value)
    elif isinstance(node, list):
        for value in node:
            found |= _config_modules(value)
    return found
