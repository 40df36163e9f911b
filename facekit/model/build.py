"""Model assembly: backbone -> neck -> embedding (BatchNorm) -> head.

The *basic model* maps raw [0, 255] pixels to the embedding and is what
verification and deployment use; the *training model* adds the head.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import zipfile
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

import keras

from facekit.config import DEFAULT_HEADS, OPTIONS
from facekit.data.augment import augmentation_layers
from facekit.errors import FacekitError
from facekit.model.losses import STATE_LAYER, LossState
from facekit.registry import ENTRY_POINT_GROUP, Registry, get_registry
from facekit.run_folder import BASIC_MODEL_FILE, RunFolder, model_file

EMBEDDING_LAYER = "embedding"
BACKBONE_LAYER = "backbone"
NECK_LAYER = "neck"
BASIC_MODEL = "basic_model"
DISTILLATION_LAYER = "distillation"  # facekit.fit.distill's layer, before the head
# The embedding BatchNorm: momentum as insightface's BatchNorms (PyTorch's 0.1), its
# scale fixed at 1 (MXNet's fix_gamma, arcface_torch's frozen weight).
EMBEDDING_BN_MOMENTUM = 0.9
EMBEDDING_BN_EPSILON = 1e-5


@contextlib.contextmanager
def dtype_policy(policy: str):
    """Set Keras' global dtype policy for the block, then restore it."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


class FaceModels(NamedTuple):
    basic_model: keras.Model
    model: keras.Model


_TRAIN = {name: option.default for name, option in OPTIONS.items()}  # train's defaults


def build_model(num_classes: int, backbone: str = _TRAIN["backbone"],
                head: str = DEFAULT_HEADS["logits"], *, neck: str | None = None,
                image_size: int = _TRAIN["image_size"],
                embedding_size: int = _TRAIN["embedding_size"],
                dropout: float = _TRAIN["dropout"], embedding_bn: bool = _TRAIN["embedding_bn"],
                backbone_options: dict | None = None, neck_options: dict | None = None,
                head_options: dict | None = None, augmentation=None, seed: int = 0,
                registry: Registry | None = None) -> FaceModels:
    """Build the basic (embedding) model and the training model around it, by the
    names of their components (for your own training loop).  The defaults are
    ``facekit train``'s (its default loss, softmax, takes the softmax head).

    Args:
        num_classes: the number of identities the head classifies.
        backbone, head: registered component names (``facekit list-plugins``).
        neck: a neck name; None: the neck the backbone names.
        image_size: the square input size.
        embedding_size, dropout, embedding_bn: as the ``train`` options of those names.
        backbone_options, neck_options, head_options: component options (dicts).
        augmentation: a ``facekit.data.augment.Augmentation`` for the training model.
        seed: the augmentation's seed.
        registry: the components to choose from (default: the installed plugins).

    Returns:
        ``FaceModels(basic_model, model)``.

    Examples:
        >>> basic, model = facekit.build_model(1000, "iresnet50", "normdense",
        ...                                    embedding_size=512)
    """
    from facekit.components import resolve, resolve_neck

    registry = registry or get_registry()
    backbone = resolve(registry, "backbone", backbone, backbone_options)
    neck = resolve_neck(registry, backbone, neck, neck_options)
    basic_model = build_basic_model(backbone, neck, image_size=image_size,
                                    embedding_size=embedding_size, dropout=dropout,
                                    embedding_bn=embedding_bn)
    return FaceModels(basic_model, build_training_model(
        basic_model, num_classes, resolve(registry, "head", head, head_options),
        augmentation=augmentation, seed=seed))


def build_basic_model(backbone, neck, *, image_size: int = 112, embedding_size: int = 512,
                      dropout: float = 0.1, embedding_bn: bool = True) -> keras.Model:
    """image [0, 255] -> backbone -> neck -> embedding BatchNorm -> float32 embedding.

    ``backbone`` and ``neck`` are resolved components (facekit.plan.Resolved).
    """
    input_shape = (image_size, image_size, 3)
    inputs = keras.Input(shape=input_shape, name="image")
    backbone_model = backbone.build(input_shape)
    backbone_model.name = BACKBONE_LAYER  # one name to find (and freeze) whatever the plugin
    features = backbone_model(inputs)
    with dtype_policy("float32"):  # the neck, embedding and head stay float32 under
        neck_model = neck.build(tuple(features.shape[1:]), embedding_size, dropout)
        neck_model.name = NECK_LAYER  # mixed precision
        embedding = neck_model(features)
        if embedding_bn:
            embedding = keras.layers.BatchNormalization(
                momentum=EMBEDDING_BN_MOMENTUM, epsilon=EMBEDDING_BN_EPSILON, scale=False,
                name=EMBEDDING_LAYER)(embedding)
        else:
            embedding = keras.layers.Identity(name=EMBEDDING_LAYER)(embedding)
    return keras.Model(inputs, embedding, name=BASIC_MODEL)


def build_training_model(basic_model: keras.Model, num_classes: int, head, *,
                         augmentation=None, seed: int = 0, state: dict | None = None,
                         distillation=None) -> keras.Model:
    """image -> augmentation layers -> basic model -> a new head (a resolved component)
    -> the loss's state, if it keeps any (facekit.model.losses).

    The augmentation layers (see facekit.data.augment) act only while training.
    Staged training calls this again to put a new head on a trained basic model.
    A head layer with a ``training_model(basic_model, augmentation_layers, state_layer)``
    method builds the training model itself (the partial-fc head does: it needs the
    labels inside its step).

    Args:
        basic_model: the embedding model (``build_basic_model``).
        num_classes: the number of identities.
        head: the resolved head (``facekit.components.Resolved``).
        augmentation: a ``facekit.data.augment.Augmentation``, or None for none.
        seed: the augmentation layers' seed.
        state: the loss's state (``initial_state``), kept as model weights.
        distillation: a ``facekit.fit.distill.Distillation`` layer, between the basic
            model and the head; with ``head`` None the model ends there (``--no-labels``:
            the distillation loss is the whole loss).
    """
    layers = augmentation_layers(augmentation, seed) if augmentation else []
    with dtype_policy("float32"):  # so is the head: the loss gets float32 scores
        head_layer = head.build(num_classes) if head is not None else None
        if callable(getattr(head_layer, "training_model", None)):  # a head that trains its
            extra = {"distillation": distillation} if distillation is not None else {}
            return head_layer.training_model(  # own way (partial-fc samples its classes)
                basic_model, layers, LossState(state, name=STATE_LAYER) if state else None,
                **extra)
    images = keras.Input(shape=basic_model.input_shape[1:], name="image")
    augmented = images
    for layer in layers:
        augmented = layer(augmented)
    with dtype_policy("float32"):
        outputs = basic_model(augmented)
        if distillation is not None:
            outputs = distillation([augmented, outputs])
        if head_layer is None:
            return keras.Model(images, outputs, name="face_model")
        outputs = head_layer(outputs)
        if state:
            outputs = LossState(state, name=STATE_LAYER)(outputs)
    return keras.Model(images, outputs, name="face_model")


def head_layer(model: keras.Model):
    """The head of a training model: its last layer before any loss state (None for a
    model without a head, trained without labels)."""
    if isinstance(getattr(model, "head", None), keras.layers.Layer):  # partial-fc's model
        return model.head
    last = [layer for layer in model.layers if layer.name != STATE_LAYER][-1]
    return None if last.name in (BASIC_MODEL, DISTILLATION_LAYER) else last


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
    ``.weights.h5`` file of a basic model with the same architecture (a pretrained
    model's name or an importable file: its run, facekit.model.pretrained.resolve_model).
    """
    source = model_file(source)
    if not source.is_file():
        raise FacekitError(f"--init-from '{source}' does not exist; pass a run folder, a "
                           ".keras model or a .weights.h5 file.")
    try:
        if source.name.endswith(".weights.h5"):
            try:
                basic_model.load_weights(source)
            except ValueError:
                raise
            except Exception as exc:  # not HDF5, truncated, not Keras' layout
                raise FacekitError(unloadable(source, exc).replace(
                    "a model facekit can load", "a Keras weights file")) from None
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


def load_model(path: str | Path, compile: bool = False) -> keras.Model:
    """Load a ``.keras`` model saved by facekit, importing its plugins' Keras objects.

    Args:
        path: a ``.keras`` file, or a run folder (its basic model).
        compile: also restore the loss and optimizer (a checkpoint, to go on training).

    Examples:
        >>> basic = facekit.load_model("runs/mbf")
        >>> embeddings = basic.predict(images_uint8_rgb_112)
    """
    path = model_file(path)
    if not path.is_file():
        raise FacekitError(missing_model(path))
    import_custom_objects(path)
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as exc:  # the file is data: whatever is wrong with it is one sentence
        raise FacekitError(unloadable(path, exc)) from None


def missing_model(path: Path) -> str:
    """The sentence for a model file that is not there: for a run that stopped before its
    final models, where its last checkpoint is."""
    run = RunFolder(path.parent)
    try:
        state = run.read_state() if path.name == BASIC_MODEL_FILE else None
    except FacekitError:
        state = None
    if state is not None:
        return (f"'{run.path}' has no {BASIC_MODEL_FILE} yet: its training stopped after "
                f"epoch {state.epoch}; evaluate {run.checkpoint(state.checkpoint)}, or finish "
                f"the run with facekit train --resume {run.path}.")
    return (f"The model file '{path}' does not exist; pass a .keras file or a run folder "
            f"that holds {BASIC_MODEL_FILE}.")


def unloadable(path: Path, exc: Exception) -> str:
    """The sentence for a model file Keras refused or could not read."""
    message = " ".join(str(exc).split())
    if "safe_mode" in message or "arbitrary code" in message:
        what = "a Lambda layer" if "Lambda" in message else "a function or file it refers to"
        return f"'{path}' holds Python code ({what}); facekit does not load it."
    first = message.split(". ")[0].rstrip(".")
    if len(first) > 200:
        first = first[:200] + "…"
    return f"'{path}' is not a model facekit can load ({type(exc).__name__}: {first})."


# Modules whose Keras objects now live elsewhere, so that models and checkpoints
# saved before a move still load: the old module name -> the modules to import.
_MOVED = {
    "facekit.optimizers": ("facekit.fit.optimizers",),
    "facekit.model.state": ("facekit.model.losses",),
    "facekit_plugins.keras_losses": ("facekit_plugins.losses.margin",),
    "facekit_plugins.keras_adaptive_losses": ("facekit_plugins.losses.adaptive",),
    "facekit_plugins.keras_necks": ("facekit_plugins.necks.layers",),
    "facekit_plugins.keras_layers": ("facekit_plugins.heads.normdense",
                                     "facekit_plugins.backbones.blocks"),
}
# facekit's own modules that define Keras objects: the only ones a model file may ask for.
KERAS_MODULES = ("facekit.fit.distill", "facekit.fit.metrics", "facekit.fit.optimizers",
                 "facekit.fit.partial_fc",
                 "facekit.model.losses",
                 "facekit_plugins.backbones.blocks", "facekit_plugins.backbones.dlib_resnet",
                 "facekit_plugins.heads.normdense",
                 "facekit_plugins.losses.adaptive", "facekit_plugins.losses.margin",
                 "facekit_plugins.necks.layers")


def import_custom_objects(path: Path) -> None:
    """Import the modules that define the model's custom Keras objects.

    Keras finds a custom class only once its module has registered it; the
    saved config names that module.  The file is data: it can only choose among
    facekit's own modules that define Keras objects (``KERAS_MODULES``, and the
    old names in ``_MOVED``) and modules of installed third-party plugin
    packages, never a ``__main__`` or a private module; anything else it names is
    left to Keras' safe loading, which refuses what it does not know.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FacekitError(f"'{path}' is not a Keras 3 .keras model file ({exc}).") from None
    third_party = {ep.value.split(":")[0].split(".")[0]
                   for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)} - {
        "facekit", "facekit_plugins"}
    for module in sorted(_config_modules(config)):
        for name in _MOVED.get(module, (module,)):
            parts = name.split(".")
            if name in KERAS_MODULES or (
                    parts[0] in third_party
                    and not any(part.startswith("_") for part in parts)
                    and importlib.util.find_spec(name) is not None):
                importlib.import_module(name)


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
