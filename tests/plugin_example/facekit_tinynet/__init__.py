"""An example third-party plugin: a tiny convolutional backbone for facekit."""

from facekit import hookimpl


def tinynet(input_shape=(112, 112, 3), width=16, depth=3):
    """A few strided conv-BN-ReLU blocks: fast enough for tests and CPUs."""
    import keras

    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    for block in range(depth):
        x = keras.layers.Conv2D(width * 2**block, 3, strides=2, padding="same",
                                use_bias=False)(x)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.ReLU()(x)
    return keras.Model(inputs, x, name="tinynet")


@hookimpl
def facekit_register_backbones(register):
    register("tinynet", tinynet)
