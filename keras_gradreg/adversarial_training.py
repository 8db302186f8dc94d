"""The baseline the paper compares with: Madry et al.'s PGD adversarial training."""

import math
from typing import Optional

import keras
import tensorflow as tf

from keras_gradreg import attacks as attacks_lib
from keras_gradreg import backend
from keras_gradreg import validation
from keras_gradreg.model import WrapsModel

AT_STEPS = 7
"""PGD steps per training batch in the paper's adversarial-training baseline."""
AT_STEP_FRACTION = 1.75
"""Step size as a multiple of epsilon / steps: 7 steps of epsilon / 4 (2/255 at 8/255)."""


@keras.saving.register_keras_serializable(package="keras_gradreg")
class AdversarialTrainingModel(WrapsModel, keras.Model):
    """Trains on l_inf PGD adversarial examples of each batch (Madry et al., 2018).

    Built like a functional model (`AdversarialTrainingModel(inputs, outputs,
    epsilon=0.3)`) or with `from_model`. The examples are made in inference mode with a
    random start, `steps` steps of size 1.75 * epsilon / steps, within the data range.
    The attack radius is `current_epsilon`, which `EpsilonRamp` raises from 0 to
    `epsilon` over the first epochs (without a ramp a small network can collapse to
    chance at MNIST's epsilon 0.3).

    Args:
      epsilon: the l_inf radius at full strength.
      steps: PGD steps per batch.
      clip_min, clip_max: the data range.
    """

    def __init__(self, *args, epsilon: float = 0.3, steps: int = AT_STEPS,
                 clip_min: float = 0.0, clip_max: float = 1.0, **kwargs):
        backend.require_tensorflow("AdversarialTrainingModel (CleverHans PGD)")
        clip_min = validation.check_number("clip_min", clip_min, low=-math.inf)
        clip_max = validation.check_number("clip_max", clip_max, low=clip_min)
        epsilon = validation.check_number("epsilon", epsilon, high=clip_max - clip_min)
        steps = validation.check_number("steps", steps, low=1, low_open=False, integer=True)
        super().__init__(*args, **kwargs)
        self.epsilon, self.steps, self.clip_min, self.clip_max = epsilon, steps, clip_min, clip_max
        self.current_epsilon = keras.Variable(epsilon, trainable=False, name="current_epsilon")
        self._pgd: Optional[callable] = None

    def adversarial_examples(self, x, y) -> tf.Tensor:
        """PGD examples of x within current_epsilon (l_inf), against labels y."""
        if self._pgd is None:
            settings = attacks_lib.AttackSettings(steps=self.steps, step_fraction=AT_STEP_FRACTION)
            self._pgd = attacks_lib.fixed_budget_attack(
                lambda z: self(z, training=False), "pgd", "linf", settings, self.clip_min, self.clip_max)
        x = tf.convert_to_tensor(x)
        eps = tf.fill(tf.shape(x)[:1], tf.maximum(tf.cast(self.current_epsilon, x.dtype), 1e-12))
        return tf.stop_gradient(self._pgd(x, tf.reshape(tf.cast(y, tf.int64), [-1]), eps))

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x_adv = self.adversarial_examples(x, y)
        return super().train_step(keras.utils.pack_x_y_sample_weight(x_adv, y, sample_weight))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(epsilon=self.epsilon, steps=self.steps, clip_min=self.clip_min,
                      clip_max=self.clip_max)
        return config


class EpsilonRamp(keras.callbacks.Callback):
    """Raises an AdversarialTrainingModel's radius linearly to full strength.

    At the start of epoch e (from 0) the radius is epsilon * min(1, (e + 1) / epochs).
    """

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = validation.check_number("ramp epochs", epochs, low=1, low_open=False,
                                              integer=True)

    def on_epoch_begin(self, epoch, logs=None):
        self.model.current_epsilon.assign(self.model.epsilon * min(1.0, (epoch + 1) / self.epochs))
