"""Training augmentation as Keras preprocessing layers inside the training model.

They run on the accelerator on whole batches, keep the CPU input pipeline to
decoding alone, and do nothing in inference mode, so validation data is never
augmented and the basic (embedding) model never contains them.
"""

from __future__ import annotations

from dataclasses import dataclass



@dataclass(frozen=True)
class Augmentation:
    flip: bool = True
    brightness: float = 0.0  # max relative change
    contrast: float = 0.0
    saturation: float = 0.0
    crop_scale: float = 1.0  # random crop-and-resize keeping at least this side fraction
    grayscale: float = 0.0  # probability
    erasing: float = 0.0  # probability of erasing one random rectangle (Zhong et al. 2020)

    def is_identity(self) -> bool:
        return self == Augmentation(flip=False)


LEVELS = {
    "none": Augmentation(flip=False),
    "flip": Augmentation(),
    "light": Augmentation(brightness=0.1, contrast=0.1, crop_scale=0.9),
    "strong": Augmentation(brightness=0.2, contrast=0.2, saturation=0.2, crop_scale=0.8,
                           grayscale=0.1),
}


def resolve_augmentation(level: str, **overrides) -> Augmentation:
    """A named level with individual switches on top (None leaves the level's value).

    The level and the ranges of the switches are checked with the other training
    options (facekit.config).
    """
    values = {**LEVELS[level].__dict__, **{k: v for k, v in overrides.items() if v is not None}}
    return Augmentation(**values)


def augmentation_layers(augmentation: Augmentation, seed: int = 0) -> list:
    """The Keras layers for ``augmentation``, for pixel values in [0, 255]."""
    import keras

    value_range = (0, 255)
    layers = []
    if augmentation.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed, name="random_flip"))
    if augmentation.crop_scale < 1.0:
        zoom = (-(1.0 - augmentation.crop_scale), 0.0)  # negative: zoom in, i.e. crop
        layers.append(keras.layers.RandomZoom(zoom, seed=seed + 1, name="random_crop_resize"))
    if augmentation.brightness:
        layers.append(keras.layers.RandomBrightness(
            augmentation.brightness, value_range=value_range, seed=seed + 2,
            name="random_brightness"))
    if augmentation.contrast:
        layers.append(keras.layers.RandomContrast(
            augmentation.contrast, value_range=value_range, seed=seed + 3,
            name="random_contrast"))
    if augmentation.saturation:
        # Keras 3.15's RandomSaturation goes negative with value_range=(0, 255): work in [0, 1].
        factor = (0.5 - augmentation.saturation / 2, 0.5 + augmentation.saturation / 2)
        layers += [keras.layers.Rescaling(1 / 255, name="to_unit_range"),
                   keras.layers.RandomSaturation(factor, value_range=(0, 1), seed=seed + 4,
                                                 name="random_saturation"),
                   keras.layers.Rescaling(255, name="from_unit_range")]
    if augmentation.grayscale:
        layers.append(keras.layers.RandomGrayscale(
            augmentation.grayscale, seed=seed + 5, name="random_grayscale"))
    if augmentation.erasing:  # a rectangle of 2-33% of the image, filled with noise
        layers.append(keras.layers.RandomErasing(
            (augmentation.erasing, augmentation.erasing), value_range=value_range,
            seed=seed + 6, name="random_erasing"))
    return layers
