"""The layers the zoo needs beyond Keras': a grouped Conv2D that needs no XLA, and the
mean over groups of channels of the paper's ResNeXt.

Keras' TensorFlow backend computes a grouped convolution (`groups` > 1) through a
function compiled with XLA on every device, because TensorFlow's CPU kernels do not
take groups. Each graph that holds one compiles it again, and on a CPU the compiled
convolution is slow: the ResNeXt's training steps took three times as long, its
evaluations more than twice (docs/paper-experiments.md, GPU settings).
"""

import keras
from keras import ops

from keras_gradreg import validation


@keras.saving.register_keras_serializable(package="keras_gradreg")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D`, with `groups` > 1 computed as one convolution per group.

    The input's channels and the kernel's filters are split into `groups` equal parts,
    the i-th part of the input is convolved with the i-th part of the kernel, and the
    results are concatenated: the same numbers as Keras' grouped convolution, from the
    same kernel (shape (kh, kw, in_channels / groups, filters)), with no XLA.

    The class keeps Keras' name because Keras files address a layer's weights by its
    class's name: weights saved from a model with either class load into the other.
    `load_model` loads a saved model's grouped Keras Conv2D layers as this one.
    """

    def convolution_op(self, inputs, kernel):
        convolve = super().convolution_op  # Keras': ordinary where channels match the kernel
        if self.groups == 1:
            return convolve(inputs, kernel)
        channels = -1 if self.data_format == "channels_last" else 1
        parts = zip(ops.split(inputs, self.groups, axis=channels),
                    ops.split(kernel, self.groups, axis=-1))
        return ops.concatenate([convolve(x, k) for x, k in parts], axis=channels)


@keras.saving.register_keras_serializable(package="keras_gradreg")
class GroupMean(keras.layers.Layer):
    """The mean of `groups` equal, consecutive groups of the last axis' channels: (...,
    groups * c) -> (..., c), output channel j the mean of channels j, c + j, 2c + j, ...

    The paper's ResNeXt (Finlay & Oberman's `BranchBlock`) merges its branches this way
    instead of with a 1x1 convolution.

    Args:
      groups: how many groups, >= 1; the channels must divide into them.
      **kwargs: as for `keras.layers.Layer`.
    """

    def __init__(self, groups: int, **kwargs):
        super().__init__(**kwargs)
        self.groups = validation.check_number("groups", groups, low=1, low_open=False,
                                              integer=True)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and channels % self.groups:
            raise ValueError(f"GroupMean(groups={self.groups}) cannot split {channels} channels "
                             "into equal groups; the channels must be a multiple of groups.")
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] // self.groups,)

    def call(self, inputs):
        return ops.mean(ops.stack(ops.split(inputs, self.groups, axis=-1), axis=0), axis=0)

    def get_config(self) -> dict:
        return dict(super().get_config(), groups=self.groups)


def load_model(path: str, **kwargs) -> keras.Model:
    """`keras.models.load_model`, with Keras' grouped Conv2D layers computed as this module's.

    A model saved by keras_gradreg 0.7.0 (the ResNeXt), or built with Keras' own layer,
    then runs without compiling each grouped convolution with XLA. Only the class of
    those layers changes (this one adds no state): weights, optimizer and compiled
    settings are the loaded ones.

    Args:
      path: a `.keras` file.
      **kwargs: passed to `keras.models.load_model`.
    """
    model = keras.models.load_model(path, **kwargs)
    for layer in _layers_in(model):
        if type(layer) is keras.layers.Conv2D and layer.groups > 1:
            layer.__class__ = Conv2D
    return model


def _layers_in(layer: keras.layers.Layer):
    """The layer and every layer inside it, models within models included."""
    yield layer
    for inner in getattr(layer, "layers", ()):
        yield from _layers_in(inner)
