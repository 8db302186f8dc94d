"""The adversarial-training baselines the penalty is compared with.

- PGD adversarial training (Madry et al., 2018): train on l_inf PGD examples of each batch.
- "Fast" adversarial training (Wong, Rice & Kolter, 2020, "Fast is better than free"):
  the same with one FGSM step of 1.25 epsilon from a uniform random start.
- "Free" adversarial training (Shafahi et al., 2019): replay each batch m times; the one
  backward pass of each replay updates the weights and, by its input gradient, the
  perturbation used by the next replay.

All run on the TensorFlow backend. Their examples are made with the cross-entropy (the
compiled loss) and a random start that is a function of (seed, optimizer step), so a
resumed run draws what an uninterrupted one would.
"""

import math
import warnings
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from keras_gradreg import backend
from keras_gradreg import validation
from keras_gradreg.model import WrapsModel
from keras_gradreg.model import compiled_loss_fn

AT_STEPS = 7
"""PGD steps per training batch in the paper's adversarial-training baseline."""
AT_STEP_FRACTION = 1.75
"""PGD step size as a multiple of epsilon / steps: 7 steps of epsilon / 4 (2/255 at 8/255)."""
FGSM_STEP = 1.25
"""Fast adversarial training's step, a multiple of epsilon (Wong et al. 2020, Sec. 4)."""
FREE_REPLAYS = 4
"""Replays of each batch in free adversarial training (Shafahi et al. used m = 8 on
CIFAR-10 for their epoch count; 4 suits this project's 10-epoch digit runs)."""
MONITOR_PGD_STEPS = 10
"""PGD steps of RobustnessMonitor's held-out check."""
COLLAPSE = 0.5
"""Catastrophic overfitting: held-out PGD accuracy below this share of its best so far
while FGSM accuracy is at least what it was then."""


def _check_range(epsilon: float, clip_min: float, clip_max: float) -> tuple:
    clip_min = validation.check_number("clip_min", clip_min, low=-math.inf)
    clip_max = validation.check_number("clip_max", clip_max, low=clip_min)
    epsilon = validation.check_number("epsilon", epsilon, high=clip_max - clip_min)
    return epsilon, clip_min, clip_max


def perturb(model_fn: Callable, loss_fn: Callable, x: tf.Tensor, y: tf.Tensor, epsilon,
            steps: int, step_size: float, seed: tf.Tensor, clip_min: float,
            clip_max: float) -> tf.Tensor:
    """l_inf PGD from a uniform random start in the epsilon-ball (Madry et al. 2018).

    With steps = 1 and step_size = FGSM_STEP it is FGSM with a random start (Wong et
    al. 2020).

    Args:
      model_fn: images -> outputs (called in inference mode by the models below).
      loss_fn: (y, outputs) -> per-example loss, which the steps ascend.
      x, y: a batch and its targets.
      epsilon: the radius (a scalar tensor or number).
      steps: sign-gradient steps.
      step_size: each step, as a multiple of epsilon.
      seed: a stateless seed, shape (2,).
      clip_min, clip_max: the data range.

    Returns:
      The examples, inside the ball and the range, without gradient.
    """
    epsilon = tf.cast(epsilon, x.dtype)
    start = tf.random.stateless_uniform(tf.shape(x), seed, -1.0, 1.0, dtype=x.dtype)
    x_adv = tf.clip_by_value(x + epsilon * start, clip_min, clip_max)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            loss = tf.reduce_sum(loss_fn(y, model_fn(x_adv)))
        step = x_adv + step_size * epsilon * tf.sign(tape.gradient(loss, x_adv))
        x_adv = tf.clip_by_value(tf.clip_by_value(step, x - epsilon, x + epsilon),
                                 clip_min, clip_max)
    return tf.stop_gradient(x_adv)


class _Radius:
    """What every model here has: an l_inf radius at full strength and its current value,
    which `EpsilonRamp` raises; a data range; and a seed for the random starts."""

    def _init_radius(self, epsilon, clip_min, clip_max, seed):
        self.epsilon, self.clip_min, self.clip_max = _check_range(epsilon, clip_min, clip_max)
        self.seed = validation.check_number("seed", seed, low_open=False, integer=True)
        self.current_epsilon = keras.Variable(self.epsilon, trainable=False, name="current_epsilon")

    def _step_seed(self) -> tf.Tensor:
        """(seed, optimizer step): the same draw for the same step, resumed or not."""
        return tf.stack([tf.constant(self.seed, tf.int64),
                         tf.cast(self.optimizer.iterations, tf.int64)])

    def _radius_config(self) -> dict:
        return dict(epsilon=self.epsilon, clip_min=self.clip_min, clip_max=self.clip_max,
                    seed=self.seed)


@keras.saving.register_keras_serializable(package="keras_gradreg")
class AdversarialTrainingModel(_Radius, WrapsModel, keras.Model):
    """Trains on l_inf PGD adversarial examples of each batch (Madry et al., 2018).

    Built like a functional model (`AdversarialTrainingModel(inputs, outputs,
    epsilon=0.3)`) or with `from_model`. The examples are made in inference mode on the
    compiled loss, from a uniform random start, with `steps` sign steps of
    `step_size * epsilon`, within the data range. `steps=1, step_size=FGSM_STEP` is
    fast adversarial training (Wong et al. 2020). The radius is `current_epsilon`,
    which `EpsilonRamp` raises from 0 to `epsilon` over the first epochs (without a
    ramp a small network can collapse to chance at MNIST's epsilon 0.3).

    Args:
      epsilon: the l_inf radius at full strength.
      steps: PGD steps per batch.
      step_size: each step as a multiple of epsilon (default AT_STEP_FRACTION / steps).
      clip_min, clip_max: the data range.
      seed: seeds the random starts (with the optimizer step).
    """

    def __init__(self, *args, epsilon: float = 0.3, steps: int = AT_STEPS,
                 step_size: Optional[float] = None, clip_min: float = 0.0,
                 clip_max: float = 1.0, seed: int = 0, **kwargs):
        backend.require_tensorflow("AdversarialTrainingModel")
        steps = validation.check_number("steps", steps, low=1, low_open=False, integer=True)
        if step_size is not None:
            step_size = validation.check_number("step_size", step_size)
        super().__init__(*args, **kwargs)
        self._init_radius(epsilon, clip_min, clip_max, seed)
        self.steps, self.step_size = steps, step_size

    def adversarial_examples(self, x, y) -> tf.Tensor:
        """The training examples of x within current_epsilon (l_inf), against targets y."""
        x = tf.convert_to_tensor(x)
        step = AT_STEP_FRACTION / self.steps if self.step_size is None else self.step_size
        return perturb(lambda z: self(z, training=False), compiled_loss_fn(self), x, y,
                       self.current_epsilon, self.steps, step, self._step_seed(),
                       self.clip_min, self.clip_max)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x_adv = self.adversarial_examples(x, y)
        return super().train_step(keras.utils.pack_x_y_sample_weight(x_adv, y, sample_weight))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(steps=self.steps, step_size=self.step_size, **self._radius_config())
        return config


@keras.saving.register_keras_serializable(package="keras_gradreg")
class FreeAdversarialTrainingModel(_Radius, WrapsModel, keras.Model):
    """"Free" adversarial training (Shafahi et al., 2019): each batch is replayed
    `replays` times; each replay's backward pass gives the weight update and the input
    gradient, by whose sign the perturbation grows by epsilon (clipped to the ball).

    One `train_step` is `replays` optimizer updates, so train for epochs / replays
    epochs. The perturbation starts at 0 on each batch (Shafahi et al. carry it over
    from the previous batch, whose images are others). `EpsilonRamp` works as for
    AdversarialTrainingModel.

    Args:
      epsilon: the l_inf radius at full strength.
      replays: m, the updates per batch.
      clip_min, clip_max: the data range.
      seed: kept for the monitor and the config (free training draws nothing).
    """

    def __init__(self, *args, epsilon: float = 0.3, replays: int = FREE_REPLAYS,
                 clip_min: float = 0.0, clip_max: float = 1.0, seed: int = 0, **kwargs):
        backend.require_tensorflow("FreeAdversarialTrainingModel")
        replays = validation.check_number("replays", replays, low=1, low_open=False, integer=True)
        super().__init__(*args, **kwargs)
        self._init_radius(epsilon, clip_min, clip_max, seed)
        self.replays = replays

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x = tf.convert_to_tensor(x)
        epsilon = tf.cast(self.current_epsilon, x.dtype)
        delta = tf.zeros_like(x)
        for _ in range(self.replays):
            with tf.GradientTape() as tape:
                tape.watch(delta)
                x_adv = tf.clip_by_value(x + delta, self.clip_min, self.clip_max)
                y_pred = self(x_adv, training=True)
                loss = self.compute_loss(x=x_adv, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                         training=True)
                scaled = self.optimizer.scale_loss(loss)
            *gradients, input_gradient = tape.gradient(scaled, self.trainable_weights + [delta])
            self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
            delta = tf.clip_by_value(delta + epsilon * tf.sign(input_gradient), -epsilon, epsilon)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync  # Keras scales the loss
        self._loss_tracker.update_state(loss * replicas, sample_weight=tf.shape(x)[0])
        return self.compute_metrics(x_adv, y, y_pred, sample_weight=sample_weight)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(replays=self.replays, **self._radius_config())
        return config


class EpsilonRamp(keras.callbacks.Callback):
    """Raises an adversarially trained model's radius linearly to full strength.

    At the start of epoch e (from 0) the radius is epsilon * min(1, (e + 1) / epochs).
    """

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = validation.check_number("ramp epochs", epochs, low=1, low_open=False,
                                              integer=True)

    def on_epoch_begin(self, epoch, logs=None):
        self.model.current_epsilon.assign(self.model.epsilon * min(1.0, (epoch + 1) / self.epochs))


class RobustnessMonitor(keras.callbacks.Callback):
    """Watches held-out robustness during training, and catastrophic overfitting.

    At each epoch's end it adds to the logs (History, CSV, TensorBoard; put it before
    the loggers) the accuracy of the model on held-out images under FGSM from a random
    start (`fgsm_accuracy`) and under 10-step PGD (`pgd_accuracy`), both at `epsilon`,
    and `catastrophic_overfitting`: 1 from the epoch where PGD accuracy fell below
    COLLAPSE x its best while FGSM accuracy held (Wong et al. 2020, Sec. 5: a failure of
    fast adversarial training), with a warning naming the epoch.

    Args:
      x, y: held-out images and integer labels (a batch or two is enough).
      epsilon: the l_inf radius.
      clip_min, clip_max: the data range.
    """

    def __init__(self, x, y, epsilon: float, clip_min: float = 0.0, clip_max: float = 1.0):
        super().__init__()
        self.epsilon, self.clip_min, self.clip_max = _check_range(epsilon, clip_min, clip_max)
        self.x, self.y = tf.constant(x), tf.constant(np.reshape(y, -1))
        self.best = (0.0, 0.0)  # (PGD accuracy, FGSM accuracy then)
        self.collapsed_at = None

    def _accuracy(self, steps: int, step_size: float) -> float:
        model = self.model
        x_adv = perturb(lambda z: model(z, training=False), compiled_loss_fn(model), self.x,
                        self.y, self.epsilon, steps, step_size, tf.constant([0, 0], tf.int64),
                        self.clip_min, self.clip_max)
        predicted = tf.argmax(model.predict(x_adv, verbose=0), axis=1)
        right = tf.equal(predicted, tf.cast(self.y, predicted.dtype))
        return float(tf.reduce_mean(tf.cast(right, tf.float32)))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        pgd = self._accuracy(MONITOR_PGD_STEPS, 2.5 / MONITOR_PGD_STEPS)
        fgsm = self._accuracy(1, FGSM_STEP)
        if pgd > self.best[0]:
            self.best = (pgd, fgsm)
        if self.collapsed_at is None and pgd < COLLAPSE * self.best[0] and fgsm >= self.best[1]:
            self.collapsed_at = epoch
            warnings.warn(f"Catastrophic overfitting at epoch {epoch}: held-out PGD accuracy "
                          f"{pgd:.3f} (best {self.best[0]:.3f}) while FGSM accuracy is {fgsm:.3f} "
                          f"at epsilon {self.epsilon:g}.", stacklevel=2)
        logs.update(pgd_accuracy=pgd, fgsm_accuracy=fgsm,
                    catastrophic_overfitting=float(self.collapsed_at is not None))
