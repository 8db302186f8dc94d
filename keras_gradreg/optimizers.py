"""What the paper's recipes need of an optimizer that Keras does not have: SGD whose weight
decay is PyTorch's (added to the gradient, before the momentum), and a piecewise-linear
learning-rate schedule. Both are registered with Keras' serialization, so that models
saved with them load (and resume) without custom_objects."""

from typing import Any, Sequence

import keras
from keras import ops

from keras_gradreg import validation

BIAS_NAMES = ("bias", "beta")
"""The names of Keras' bias variables: Dense's and Conv's `bias`, BatchNormalization's
shift `beta` (PyTorch names both `bias`)."""


def is_bias(variable: Any) -> bool:
    """Whether a variable is a bias (its name, without the path TensorFlow's optimizer
    sees, is one of BIAS_NAMES)."""
    return variable.name.rsplit("/", 1)[-1].split(":")[0] in BIAS_NAMES


@keras.saving.register_keras_serializable(package="keras_gradreg")
class CoupledWeightDecaySGD(keras.optimizers.SGD):
    """SGD (with momentum) whose weight decay is L2 regularisation, as PyTorch's
    `torch.optim.SGD(weight_decay=l2)` applies it: `l2 * w` is added to each weight's
    gradient before the momentum, so the decay is carried by the momentum too. Keras'
    own `weight_decay` is decoupled (`w -= lr * weight_decay * w` beside the step), which
    with momentum 0.9 decays about ten times less at the same value: the paper's recipes
    (weight decay 5e-4 on CIFAR-10, 1e-4 on ImageNet, in PyTorch) need this one.

    Args:
      learning_rate: a float or a keras.optimizers.schedules.LearningRateSchedule.
      momentum: as for keras.optimizers.SGD.
      nesterov: as for keras.optimizers.SGD.
      l2: the L2 coefficient, >= 0, applied to every trained weight.
      decay_biases: whether l2 applies to biases and BatchNorm shifts (variables named in
        BIAS_NAMES) too: the authors' CIFAR-10 recipe decays every weight, their ImageNet
        one (imagenet/train.py) every weight but those.
      **kwargs: as for keras.optimizers.SGD (but `weight_decay`, which is Keras' other
        kind).
    """

    def __init__(self, learning_rate: Any = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 l2: float = 0.0, decay_biases: bool = True, **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError(f"weight_decay={kwargs['weight_decay']!r}: CoupledWeightDecaySGD's "
                             "decay is l2 (added to the gradient); Keras' decoupled "
                             "weight_decay is keras.optimizers.SGD's.")
        super().__init__(learning_rate, momentum, nesterov, **kwargs)
        self.l2 = validation.check_number("l2", l2, low_open=False)
        self.decay_biases = bool(decay_biases)

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """SGD's step on the gradient plus l2 times the weight (unless it is a bias and
        biases are not decayed)."""
        if self.l2 and (self.decay_biases or not is_bias(variable)):
            gradient = ops.add(ops.cast(gradient, variable.dtype),
                               ops.multiply(ops.cast(self.l2, variable.dtype), variable))
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict:
        """SGD's config and l2."""
        return dict(super().get_config(), l2=self.l2, decay_biases=self.decay_biases)


@keras.saving.register_keras_serializable(package="keras_gradreg")
class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate linear between given (step, value) points and constant beyond
    them; a step named twice jumps from the first value to the second there.

    Args:
      steps: the points' optimizer steps, non-decreasing.
      values: the learning rate at each.
    """

    def __init__(self, steps: Sequence[float], values: Sequence[float]):
        steps, values = [float(s) for s in steps], [float(v) for v in values]
        if len(steps) != len(values) or len(steps) < 2:
            raise ValueError(f"steps={steps} and values={values} must be two lists of the same "
                             "length, at least 2.")
        if any(b < a for a, b in zip(steps, steps[1:])):
            raise ValueError(f"steps={steps} must not decrease.")
        for value in values:
            validation.check_number("learning rate", value, low_open=False)
        self.steps, self.values = steps, values

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        points = ops.convert_to_tensor(self.steps, "float32")
        values = ops.convert_to_tensor(self.values, "float32")
        # the segment [i, i + 1] holding the step; at a jump, the one after it
        i = ops.clip(ops.sum(ops.cast(points <= step, "int32")) - 1, 0, len(self.steps) - 2)
        start, end = ops.take(points, i), ops.take(points, i + 1)
        share = ops.clip((step - start) / ops.maximum(end - start, 1.0), 0.0, 1.0)
        return ops.take(values, i) + share * (ops.take(values, i + 1) - ops.take(values, i))

    def get_config(self) -> dict:
        """The points."""
        return {"steps": self.steps, "values": self.values}
