"""The model zoo: a small CNN for digits, CIFAR ResNe(X)ts, ResNet-50 for ImageNet.

Each builder returns a plain functional `keras.Model` that outputs logits; wrap it with
`GradRegModel.from_model` to regularise it. The activation is selectable: any name
Keras knows ("relu", "gelu", "silu", ...) or the paper's "smooth_relu", needed for
curvature bounds.
"""

from typing import Callable

import keras

from keras_gradreg import activations
from keras_gradreg import layers
from keras_gradreg import validation

ACTIVATIONS = ("relu", "softplus", "smooth_relu", "gelu", "silu")
"""The zoo's activations as measured in docs/frontier.md: ReLU, softplus, the paper's C^1
smooth ReLU (keras_gradreg.activations), GELU (exact, with erf) and SiLU (swish). Any other
name `keras.activations.get` knows is accepted too."""


def check_activation(name: str) -> str:
    """Returns the activation's name if the zoo can build with it, else a ValueError
    naming it: one of ACTIVATIONS, or any name Keras knows ("elu", "mish", ...)."""
    if name in ACTIVATIONS:
        return name
    try:
        if isinstance(name, str) and name != "smooth_relu":
            keras.activations.get(name)
            return name
    except ValueError:
        pass
    raise ValueError(f"activation={name!r} is not an activation Keras knows; use one of "
                     f"{ACTIVATIONS} or another name of keras.activations.")


def _activation(name: str):
    """What a Keras layer takes for the activation: its name, or the smooth ReLU itself."""
    return activations.smooth_relu if name == "smooth_relu" else name


def small_cnn(input_shape: tuple, num_classes: int, activation: str = "relu") -> keras.Model:
    """Two strided convolutions and a dense layer: the MNIST model of the reproduction."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation=activation)(inputs)
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation=activation)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation=activation)(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="small_cnn")


def _residual_block(x, filters: int, stride: int, activation: str, groups: int, bottleneck: bool):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters * (4 if bottleneck else 1):
        shortcut = keras.layers.Conv2D(filters * (4 if bottleneck else 1), 1, strides=stride,
                                       use_bias=False)(x)
        shortcut = keras.layers.BatchNormalization()(shortcut)
    if bottleneck:  # ResNeXt: 1x1, grouped 3x3, 1x1 (x4 channels)
        y = keras.layers.Conv2D(filters, 1, use_bias=False)(x)
        y = keras.layers.Activation(activation)(keras.layers.BatchNormalization()(y))
        y = layers.Conv2D(filters, 3, strides=stride, padding="same", groups=groups,
                          use_bias=False)(y)  # keras.layers.Conv2D would compile it with XLA
        y = keras.layers.Activation(activation)(keras.layers.BatchNormalization()(y))
        y = keras.layers.Conv2D(filters * 4, 1, use_bias=False)(y)
    else:
        y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        y = keras.layers.Activation(activation)(keras.layers.BatchNormalization()(y))
        y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = keras.layers.BatchNormalization()(y)
    return keras.layers.Activation(activation)(keras.layers.Add()([shortcut, y]))


def cifar_resnet(input_shape: tuple, num_classes: int, activation: str = "relu", *,
                 blocks_per_stage: int = 2, width: int = 16, groups: int = 1,
                 bottleneck: bool = False, name: str = "cifar_resnet") -> keras.Model:
    """A three-stage CIFAR ResNet (or ResNeXt with `groups` > 1 and `bottleneck`)."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.Activation(activation)(keras.layers.BatchNormalization()(x))
    for stage in range(3):
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _residual_block(x, width * 2**stage, stride, activation, groups, bottleneck)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name=name)


def resnext34_2x32(input_shape: tuple, num_classes: int, activation: str = "relu") -> keras.Model:
    """The paper's CIFAR-10 network: ResNeXt, 3 stages of 5 bottleneck blocks, 2 groups,
    base width 32 (Finlay & Oberman 2019, from the authors' code)."""
    return cifar_resnet(input_shape, num_classes, activation, blocks_per_stage=5, width=32,
                        groups=2, bottleneck=True, name="resnext34_2x32")


def resnet50(input_shape: tuple, num_classes: int, activation: str = "relu") -> keras.Model:
    """keras.applications.ResNet50 without weights, logits out, activation swapped in."""
    base = keras.applications.ResNet50(weights=None, input_shape=input_shape,
                                       classes=num_classes, classifier_activation=None)
    if activation == "relu":
        return base

    def swap(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.Activation) and config["activation"] == "relu":
            config["activation"] = activation
        return layer.__class__.from_config(config)

    return keras.models.clone_model(base, clone_function=swap)


MODELS: dict = {
    "small_cnn": small_cnn,
    "cifar_resnet": cifar_resnet,
    "resnext34_2x32": resnext34_2x32,
    "resnet50": resnet50,
}
"""Every zoo model's builder by name (--model): (input_shape, num_classes, activation)."""


def build_model(name: str, input_shape: tuple, num_classes: int,
                activation: str = "relu") -> keras.Model:
    """Builds a zoo model by name (a key of MODELS)."""
    validation.check_choice("model", name, tuple(MODELS))
    builder: Callable = MODELS[name]
    return builder(tuple(input_shape), num_classes, _activation(check_activation(activation)))
