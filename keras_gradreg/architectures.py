"""The model zoo: a small CNN for digits, a CIFAR ResNet, and the paper's two networks as
the authors' code builds them: their ResNeXt34-2x32 for CIFAR-10 and their ResNet-50 for
ImageNet.

Each builder returns a plain functional `keras.Model` that outputs logits; wrap it with
`GradRegModel.from_model` to regularise it. The activation is selectable: any name
Keras knows ("relu", "gelu", "silu", ...) or the paper's "smooth_relu", needed for
curvature bounds.

The paper's networks follow github.com/cfinlay/tulip (cifar10/models/resnet.py and
blocks.py; imagenet/resnet.py and train.py), in PyTorch, including its defaults that
Keras does not share: weights drawn uniformly in +-1/sqrt(fan_in) (CIFAR-10) or from He's
normal over fan_out (ImageNet), BatchNorm with momentum 0.1 in PyTorch's convention and
epsilon 1e-5, and symmetric padding of the strided convolutions.
"""

import math
from typing import Callable

import keras

from keras_gradreg import activations
from keras_gradreg import layers
from keras_gradreg import validation

ACTIVATIONS = ("relu", "softplus", "smooth_relu", "gelu", "silu")
"""The zoo's activations as measured in docs/frontier.md: ReLU, softplus, the paper's C^1
smooth ReLU (keras_gradreg.activations), GELU (exact, with erf) and SiLU (swish). Any other
name `keras.activations.get` knows is accepted too."""
TORCH_BATCHNORM = dict(momentum=0.9, epsilon=1e-5)
"""PyTorch's BatchNorm defaults in Keras' terms (its momentum 0.1 weighs the new batch;
Keras' momentum weighs the old average), which the authors' networks use."""
TORCH_UNIFORM = keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")
"""Uniform in +-1/sqrt(fan_in): the authors' CIFAR-10 blocks' weights, and PyTorch's default
for its convolutions (sqrt(3 * scale / fan_in) with scale 1/3)."""


def check_activation(name: str) -> str:
    """Returns the activation's name if the zoo can build with it, else a ValueError
    naming it: one of ACTIVATIONS, or any name Keras knows ("elu", "mish", ...)."""
    known = name in ACTIVATIONS
    if not known and isinstance(name, str):
        try:
            known = keras.activations.get(name) is not None
        except ValueError:
            pass
    if not known:
        raise ValueError(f"activation={name!r} is not an activation Keras knows; use one of "
                         f"{ACTIVATIONS} or another name of keras.activations.")
    return name


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


def _residual_block(x, filters: int, stride: int, activation):
    """Two 3x3 convolutions with BatchNorm, and the shortcut (a 1x1 convolution where the
    shape changes)."""
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False)(x)
        shortcut = keras.layers.BatchNormalization()(shortcut)
    y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    y = keras.layers.Activation(activation)(keras.layers.BatchNormalization()(y))
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = keras.layers.BatchNormalization()(y)
    return keras.layers.Activation(activation)(keras.layers.Add()([shortcut, y]))


def cifar_resnet(input_shape: tuple, num_classes: int, activation: str = "relu", *,
                 blocks_per_stage: int = 2, width: int = 16,
                 name: str = "cifar_resnet") -> keras.Model:
    """A three-stage CIFAR ResNet of basic blocks (He et al. 2016), widths w, 2w, 4w."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.Activation(activation)(keras.layers.BatchNormalization()(x))
    for stage in range(3):
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _residual_block(x, width * 2**stage, stride, activation)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name=name)


def _their_bias(fan_in: int) -> keras.initializers.Initializer:
    """The authors' bias of a block: uniform in +-1/sqrt(fan_in) of its convolution."""
    return keras.initializers.RandomUniform(-1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in))


def _block(x, layer: keras.layers.Layer, fan_in: int, activation):
    """The authors' `Conv` and `Linear` blocks: the layer without bias, BatchNorm without
    scale or shift, then a learned bias, then the activation. The bias is BatchNorm's own
    shift (the same function), drawn as theirs."""
    x = layer(x)
    x = keras.layers.BatchNormalization(scale=False, beta_initializer=_their_bias(fan_in),
                                        **TORCH_BATCHNORM)(x)
    return keras.layers.Activation(activation)(x)


def _conv_block(x, filters: int, kernel: int, activation):
    fan_in = kernel * kernel * x.shape[-1]
    conv = keras.layers.Conv2D(filters, kernel, padding="same", use_bias=False,
                               kernel_initializer=TORCH_UNIFORM)
    return _block(x, conv, fan_in, activation)


def _branch_block(x, activation, branches: int = 2):
    """The authors' `BranchBlock`: a 3x3 convolution to `branches` times the channels,
    BatchNorm, the activation, a 3x3 convolution in `branches` groups, BatchNorm, the mean
    of the groups (instead of a ResNeXt's 1x1 convolution), the input added, the
    activation."""
    channels = x.shape[-1]
    y = keras.layers.Conv2D(channels * branches, 3, padding="same", use_bias=False,
                            kernel_initializer=TORCH_UNIFORM)(x)
    y = keras.layers.BatchNormalization(**TORCH_BATCHNORM)(y)
    y = keras.layers.Activation(activation)(y)
    y = layers.Conv2D(channels * branches, 3, padding="same", groups=branches, use_bias=False,
                      kernel_initializer=TORCH_UNIFORM)(y)  # keras.layers.Conv2D: XLA
    y = keras.layers.BatchNormalization(**TORCH_BATCHNORM)(y)
    y = layers.GroupMean(branches)(y)
    return keras.layers.Activation(activation)(keras.layers.Add()([x, y]))


RESNEXT_STAGES = (5, 5, 5)
"""The paper's ResNeXt34-2x32: blocks per stage (`ResNet([5, 5, 5], block='BranchBlock',
base_channels=32)` in the authors' code)."""


def resnext34_2x32(input_shape: tuple, num_classes: int, activation: str = "relu") -> keras.Model:
    """The paper's CIFAR-10 network, ResNeXt34-2x32, as the authors' code builds it.

    A 3x3 convolution block to 32 channels; three stages of five 2-branch blocks at 32,
    64 and 128 channels, the second and third entered through a 1x1 convolution block to
    the new width and 2x2 average pooling (no strided convolutions); global average
    pooling; a linear block to the classes. A block is convolution, BatchNorm without
    scale, a bias, the activation: also the last, so the logits pass through the
    activation too (non-negative with ReLU), as in theirs. 3,892,298 trainable weights
    for 10 classes (their count).
    """
    inputs = keras.Input(input_shape)
    width = 32
    x = _conv_block(inputs, width, 3, activation)
    for stage, blocks in enumerate(RESNEXT_STAGES):
        if stage:
            width *= 2
            x = _conv_block(x, width, 1, activation)
            x = keras.layers.AveragePooling2D(2)(x)
        for _ in range(blocks):
            x = _branch_block(x, activation)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(num_classes, use_bias=False, kernel_initializer=TORCH_UNIFORM)
    return keras.Model(inputs, _block(x, dense, width, activation), name="resnext34_2x32")


RESNET50_STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))
"""ResNet-50's stages: (bottleneck width, blocks); each block's output is 4 x the width."""
HE_FAN_OUT = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")
"""The authors' ResNet-50 convolutions (kaiming_normal_, fan_out, for ReLU)."""


def _padded_conv(x, filters: int, kernel: int, stride: int = 1):
    """A convolution without bias padded by kernel // 2 on every side, as PyTorch pads
    (Keras' "same" pads a strided convolution on one side only)."""
    if kernel > 1:
        x = keras.layers.ZeroPadding2D(kernel // 2)(x)
    return keras.layers.Conv2D(filters, kernel, strides=stride, use_bias=False,
                               kernel_initializer=HE_FAN_OUT)(x)


def _bottleneck(x, width: int, stride: int, activation):
    """A ResNet bottleneck as the authors' (and torchvision's) code builds it: the stride
    on the 3x3 convolution; the last BatchNorm's scale starts at 0 (their `--init-bn0`,
    Goyal et al. 2017), so each block starts as the identity."""
    shortcut = x
    if stride != 1 or x.shape[-1] != 4 * width:
        shortcut = keras.layers.BatchNormalization(**TORCH_BATCHNORM)(
            _padded_conv(x, 4 * width, 1, stride))
    y = x
    for filters, kernel, step in ((width, 1, 1), (width, 3, stride)):
        y = keras.layers.BatchNormalization(**TORCH_BATCHNORM)(_padded_conv(y, filters, kernel, step))
        y = keras.layers.Activation(activation)(y)
    y = keras.layers.BatchNormalization(gamma_initializer="zeros", **TORCH_BATCHNORM)(
        _padded_conv(y, 4 * width, 1))
    return keras.layers.Activation(activation)(keras.layers.Add()([shortcut, y]))


def resnet50(input_shape: tuple, num_classes: int, activation: str = "relu") -> keras.Model:
    """The paper's ImageNet network: ResNet-50 as the authors' code builds it.

    torchvision's ResNet-50 (v1.5: the stride on each bottleneck's 3x3 convolution, no
    convolution biases; 25,557,032 trainable weights for 1,000 classes), initialised as
    their `train.py --init-bn0` does: convolutions He-normal over fan_out, each block's
    last BatchNorm scale 0, the classifier's weights normal with standard deviation 0.01.
    The max-pooling's padding is zeros, which after ReLU is PyTorch's -inf padding; after
    an activation with negative values it differs at the borders.
    """
    inputs = keras.Input(input_shape)
    x = keras.layers.BatchNormalization(**TORCH_BATCHNORM)(_padded_conv(inputs, 64, 7, 2))
    x = keras.layers.Activation(activation)(x)
    x = keras.layers.MaxPooling2D(3, 2)(keras.layers.ZeroPadding2D(1)(x))
    for stage, (width, blocks) in enumerate(RESNET50_STAGES):
        for block in range(blocks):
            x = _bottleneck(x, width, 2 if stage and not block else 1, activation)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(num_classes, bias_initializer=_their_bias(x.shape[-1]),
                                kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01))(x)
    return keras.Model(inputs, logits, name="resnet50")


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
