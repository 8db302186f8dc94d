"""Adversarial training, alone and with regularisers.

- PGD adversarial training (Madry et al., 2018): train on PGD examples of each batch,
  l_inf or l2 (TensorFlow).
- Single-step adversarial training (`SingleStepAdversarialModel`, TensorFlow and JAX):
  "fast" FGSM from a random start (Wong, Rice & Kolter, 2020, "Fast is better than
  free") or N-FGSM (de Jorge et al., 2022), l_inf or l2, optionally with a regulariser
  against catastrophic overfitting: the local-linearity error (ELLE, constant or
  adaptive), this library's finite-difference gradient penalty, or GradAlign.
- "Free" adversarial training (Shafahi et al., 2019): replay each batch m times; the one
  backward pass of each replay updates the weights and, by its input gradient, the
  perturbation used by the next replay (TensorFlow, l_inf).

Their examples are made with the cross-entropy (the compiled loss) and random draws
that are functions of (seed, optimizer step), so a resumed run draws what an
uninterrupted one would. The balls, steps and projections are keras_gradreg.primitives.
"""

import math
import warnings
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from keras import ops

from keras_gradreg import backend
from keras_gradreg import local_linearity
from keras_gradreg import penalty as penalty_lib
from keras_gradreg import primitives
from keras_gradreg import validation
from keras_gradreg.model import SteppedModel
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
SINGLE_STEP_METHODS = ("fgsm_rs", "n_fgsm")
""""fgsm_rs": FGSM from a uniform random start in the ball, step FGSM_STEP, projected
back onto the ball (Wong et al. 2020); "n_fgsm": noise from the N_FGSM_NOISE-times
larger ball, step N_FGSM_STEP, no projection (de Jorge et al., NeurIPS 2022)."""
N_FGSM_NOISE = 2.0
"""N-FGSM's noise radius, a multiple of epsilon (de Jorge et al. 2022: k = 2 eps)."""
N_FGSM_STEP = 1.0
"""N-FGSM's step, a multiple of epsilon (de Jorge et al. 2022)."""
AT_REGULARIZERS = ("none", "local_linearity", "adaptive_local_linearity", "gradient_penalty",
                   "grad_align")
"""Regularisers of single-step adversarial training; see SingleStepAdversarialModel."""
ADAPTIVE_DECAY = 0.99
"""ELLE-A: the regulariser weight's decay per step after a spike (Abad Rocamora et al. 2024)."""
ADAPTIVE_SIGMAS = 2.0
"""ELLE-A: a spike is an error above the mean + ADAPTIVE_SIGMAS std of its past values."""
MONITOR_PGD_STEPS = 10
"""PGD steps of RobustnessMonitor's held-out check."""
MONITOR_PGD_STEP_FRACTION = 2.5
"""The monitor's PGD step, epsilon * MONITOR_PGD_STEP_FRACTION / steps (Madry et al.'s
2.5 eps / steps)."""
COLLAPSE = 0.5
"""Catastrophic overfitting: held-out PGD accuracy below this share of its best so far
while FGSM accuracy is at least what it was then."""


def _check_range(epsilon: float, clip_min: float, clip_max: float,
                 attack_norm: str = "linf", size: Optional[int] = None) -> tuple:
    """(epsilon, clip_min, clip_max) as floats; ValueError naming a bad one. A radius
    larger than the data range's diameter in the norm (l_inf: its width) is refused:
    for an l_inf run it is most often an l2 radius given by mistake."""
    primitives.check_ball_norm(attack_norm)
    clip_min = validation.check_number("clip_min", clip_min, low=-math.inf)
    clip_max = validation.check_number("clip_max", clip_max, low=clip_min)
    high = (primitives.max_radius(attack_norm, clip_min, clip_max, size)
            if attack_norm == "linf" or size else math.inf)
    hint = ("(an l_inf radius within the data range; an l2 radius needs attack_norm='l2')"
            if attack_norm == "linf" else f"(at most the l2 diameter of the data range, {high:g})")
    epsilon = validation.check_number("epsilon", epsilon, high=high, hint=hint)
    return epsilon, clip_min, clip_max


def perturb(model: Callable, loss_fn: Callable, x, y, epsilon, steps: int, step_size: float,
            seed, clip_min: float, clip_max: float, attack_norm: str = "linf"):
    """PGD from a uniform random start in the epsilon-ball (Madry et al. 2018), in
    l_inf (sign steps) or l2 (normalised-gradient steps), on either Keras backend.

    With steps = 1 and step_size = FGSM_STEP it is FGSM with a random start (Wong et
    al. 2020).

    Args:
      model: a Keras model, called in inference mode.
      loss_fn: (y, outputs) -> per-example loss, which the steps ascend.
      x, y: a batch (one input tensor) and its targets.
      epsilon: the radius (a scalar tensor or number).
      steps: gradient steps.
      step_size: each step, as a multiple of epsilon.
      seed: a stateless seed, shape (2,).
      clip_min, clip_max: the data range.
      attack_norm: "linf" or "l2".

    Returns:
      The examples, inside the ball and the range, without gradient.
    """
    x = penalty_lib.as_float(x)
    epsilon = ops.cast(epsilon, x.dtype)
    start = primitives.random_in_ball(ops.shape(x), epsilon, attack_norm, seed, x.dtype)
    x_adv = primitives.clip_to_range(x + start, clip_min, clip_max)
    for _ in range(steps):
        gradient = input_gradient(model, x_adv, y, loss_fn)
        x_adv = primitives.project(
            primitives.ascend(x_adv, gradient, epsilon, step_size, attack_norm), x, epsilon,
            attack_norm, clip_min, clip_max)
    return ops.stop_gradient(x_adv)


def input_gradient(model, x, y, loss_fn, training: bool = False, state: bool = False):
    """grad_x of the per-example loss, shaped like x, taken by the backend module
    (keras_gradreg/backend/); with state=True also the model's state before the pass,
    which the passes that must leave no trace run with (`keras.StatelessScope`)."""
    clean = penalty_lib.clean_pass(model, x, y, loss_fn, training)
    gradient = ops.cast(ops.reshape(clean.gradient, ops.shape(x)), x.dtype)
    return (gradient, clean.state) if state else gradient


class _Radius:
    """What every model here has: a radius at full strength and its current value,
    which `EpsilonRamp` raises; the ball's norm; a data range; and a seed for the
    random draws."""

    def _init_radius(self, epsilon, clip_min, clip_max, seed, attack_norm="linf"):
        size = None
        if getattr(self, "inputs", None) and all(d is not None for d in self.inputs[0].shape[1:]):
            size = math.prod(self.inputs[0].shape[1:])
        self.epsilon, self.clip_min, self.clip_max = _check_range(epsilon, clip_min, clip_max,
                                                                  attack_norm, size)
        self.attack_norm = attack_norm
        self.seed = validation.check_number("seed", seed, low_open=False, integer=True)
        self.current_epsilon = keras.Variable(self.epsilon, trainable=False, name="current_epsilon")

    def _step_seed(self, stream: int = 0):
        """(seed, optimizer step): the same draw for the same step, resumed or not;
        stream > 0 for a step's further independent draws."""
        seed = ops.stack([ops.convert_to_tensor(self.seed, "int32"),
                          ops.cast(self.optimizer.iterations, "int32")])
        return primitives.seed_stream(seed, stream)

    def _radius_config(self) -> dict:
        return dict(epsilon=self.epsilon, clip_min=self.clip_min, clip_max=self.clip_max,
                    seed=self.seed, attack_norm=self.attack_norm)


@keras.saving.register_keras_serializable(package="keras_gradreg")
class AdversarialTrainingModel(_Radius, WrapsModel, keras.Model):
    """Trains on PGD adversarial examples of each batch (Madry et al., 2018), l_inf or l2.

    Built like a functional model (`AdversarialTrainingModel(inputs, outputs,
    epsilon=0.3)`) or with `from_model`. The examples are made in inference mode on the
    compiled loss, from a uniform random start, with `steps` sign steps of
    `step_size * epsilon`, within the data range. `steps=1, step_size=FGSM_STEP` is
    fast adversarial training (Wong et al. 2020). The radius is `current_epsilon`,
    which `EpsilonRamp` raises from 0 to `epsilon` over the first epochs (without a
    ramp a small network can collapse to chance at MNIST's epsilon 0.3).

    Args:
      epsilon: the radius at full strength.
      steps: PGD steps per batch.
      step_size: each step as a multiple of epsilon (default AT_STEP_FRACTION / steps).
      clip_min, clip_max: the data range.
      seed: seeds the random starts (with the optimizer step).
      attack_norm: "linf" (sign steps, box projection) or "l2" (normalised-gradient
        steps, a random start uniform in the l2 ball, projection onto it).
    """

    def __init__(self, *args, epsilon: float = 0.3, steps: int = AT_STEPS,
                 step_size: Optional[float] = None, clip_min: float = 0.0,
                 clip_max: float = 1.0, seed: int = 0, attack_norm: str = "linf", **kwargs):
        backend.require_tensorflow("AdversarialTrainingModel")
        steps = validation.check_number("steps", steps, low=1, low_open=False, integer=True)
        if step_size is not None:
            step_size = validation.check_number("step_size", step_size)
        primitives.check_ball_norm(attack_norm)
        super().__init__(*args, **kwargs)
        self._init_radius(epsilon, clip_min, clip_max, seed, attack_norm)
        self.steps, self.step_size = steps, step_size

    def adversarial_examples(self, x, y) -> tf.Tensor:
        """The training examples of x within current_epsilon, against targets y."""
        step = AT_STEP_FRACTION / self.steps if self.step_size is None else self.step_size
        return perturb(self, compiled_loss_fn(self), x, y, self.current_epsilon, self.steps,
                       step, self._step_seed(), self.clip_min, self.clip_max, self.attack_norm)

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
                x_adv = primitives.clip_to_range(x + delta, self.clip_min, self.clip_max)
                y_pred = self(x_adv, training=True)
                loss = self.compute_loss(x=x_adv, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                         training=True)
                scaled = self.optimizer.scale_loss(loss)
            *gradients, input_gradient = tape.gradient(scaled, self.trainable_weights + [delta])
            self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
            delta = tf.clip_by_value(primitives.ascend(delta, input_gradient, epsilon, 1.0, "linf"),
                                     -epsilon, epsilon)  # the perturbation, back into the ball
        replicas = tf.distribute.get_strategy().num_replicas_in_sync  # Keras scales the loss
        self._loss_tracker.update_state(loss * replicas, sample_weight=tf.shape(x)[0])
        return self.compute_metrics(x_adv, y, y_pred, sample_weight=sample_weight)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(replays=self.replays, **self._radius_config())
        return config


@keras.saving.register_keras_serializable(package="keras_gradreg")
class SingleStepAdversarialModel(_Radius, SteppedModel):
    """Single-step adversarial training (FGSM-RS or N-FGSM), optionally regularised.

    Each step trains on one-step adversarial examples of the batch, made in inference
    mode on the compiled loss, l_inf or l2, plus `regularizer_weight` times one of:

    - "local_linearity" (ELLE, Abad Rocamora et al., ICLR 2024): the batch mean of
      `local_linearity_error` on a triplet drawn in the ball (three forward passes);
    - "adaptive_local_linearity" (ELLE-A, the same paper): the same error with the
      weight 0 until the error exceeds the mean + 2 std of its past values (from the
      third step on), then `regularizer_weight`, decaying by 0.99 a step;
    - "gradient_penalty": this library's finite-difference input-gradient penalty at
      the clean point, weighted `regularizer_weight / 2` like GradRegModel's (`h`, the
      squared dual norm of `attack_norm`);
    - "grad_align" (Andriushchenko & Flammarion, NeurIPS 2020): 1 - cos(grad_x loss(x),
      grad_x loss(x + eta)), eta uniform in the ball, the first gradient a constant,
      the second differentiated through (double backpropagation: the cost anchor).

    Written once in keras.ops over the backend modules' input gradient (as
    GradRegModel is), so it runs on TensorFlow (also under MirroredStrategy) and JAX
    (also on several processes with keras.distribution). Every random draw is a
    function of (seed, optimizer step): a resumed run draws what an uninterrupted one
    would. The regulariser's passes run in training mode and leave no trace (BatchNorm
    statistics follow the adversarial batch only). `evaluate` reports the clean loss
    (Keras' own test step). The logs add `regularizer` (its batch mean, unweighted) and
    `regularizer_weight` (the weight it was applied with; ELLE-A's changes).

    Args:
      epsilon: the radius at full strength (`EpsilonRamp` raises `current_epsilon`).
      attack_norm: "linf" or "l2".
      method: "fgsm_rs" or "n_fgsm" (SINGLE_STEP_METHODS).
      step_size: the step as a multiple of epsilon (default FGSM_STEP = 1.25 for
        fgsm_rs, N_FGSM_STEP = 1 for n_fgsm).
      regularizer: one of AT_REGULARIZERS.
      regularizer_weight: its weight, > 0 with a regulariser, 0 without.
      h: the finite difference's step for "gradient_penalty".
      clip_min, clip_max: the data range.
      seed: seeds the random draws (with the optimizer step).
    """

    STEP_LOGS = ("regularizer", "regularizer_weight")

    def __init__(self, *args, epsilon: float = 0.3, attack_norm: str = "linf",
                 method: str = "fgsm_rs", step_size: Optional[float] = None,
                 regularizer: str = "none", regularizer_weight: float = 0.0,
                 h: float = penalty_lib.DEFAULT_H, clip_min: float = 0.0, clip_max: float = 1.0,
                 seed: int = 0, **kwargs):
        primitives.check_ball_norm(attack_norm)
        validation.check_choice("method", method, SINGLE_STEP_METHODS)
        validation.check_choice("regularizer", regularizer, AT_REGULARIZERS)
        regularizer_weight = validation.check_number("regularizer_weight", regularizer_weight,
                                                     low_open=False)
        if (regularizer == "none") != (regularizer_weight == 0):
            raise ValueError(
                f"regularizer={regularizer!r} with regularizer_weight={regularizer_weight!r}: "
                "a regulariser needs a weight > 0, and a weight > 0 needs a regulariser (one of "
                f"{', '.join(AT_REGULARIZERS[1:])}).")
        if step_size is not None:
            step_size = validation.check_number("step_size", step_size)
        h = validation.check_number("h", h)
        super().__init__(*args, **kwargs)
        self._init_radius(epsilon, clip_min, clip_max, seed, attack_norm)
        self.method, self.step_size = method, step_size
        self.regularizer, self.regularizer_weight, self.h = regularizer, regularizer_weight, h
        if regularizer == "adaptive_local_linearity":  # ELLE-A's state, saved and resumed
            self.adaptive_state = [keras.Variable(0.0, trainable=False, name=name,
                                                  aggregation="only_first_replica")
                                   for name in ("error_count", "error_mean", "error_m2", "weight")]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(method=self.method, step_size=self.step_size, regularizer=self.regularizer,
                      regularizer_weight=self.regularizer_weight, h=self.h, **self._radius_config())
        return config

    def _step_weight(self) -> tuple:
        return self.regularizer_weight or None, 1

    def adversarial_examples(self, x, y):
        """The training examples of the batch x within current_epsilon, against targets y."""
        return self._adversarial(penalty_lib.as_float(x), y, compiled_loss_fn(self))[0]

    def _adversarial(self, x, y, loss_fn) -> tuple:
        """(the examples, the model's state before the step) of a batch."""
        epsilon = ops.cast(self.current_epsilon, x.dtype)
        n_fgsm = self.method == "n_fgsm"
        noise = (N_FGSM_NOISE if n_fgsm else 1.0) * epsilon
        start = primitives.clip_to_range(
            x + primitives.random_in_ball(ops.shape(x), noise, self.attack_norm,
                                          self._step_seed(), x.dtype),
            self.clip_min, self.clip_max)
        gradient, state = input_gradient(self, start, y, loss_fn, state=True)
        step = self.step_size or (N_FGSM_STEP if n_fgsm else FGSM_STEP)
        x_adv = primitives.ascend(start, gradient, epsilon, step, self.attack_norm)
        if n_fgsm:
            x_adv = primitives.clip_to_range(x_adv, self.clip_min, self.clip_max)
        else:
            x_adv = primitives.project(x_adv, x, epsilon, self.attack_norm, self.clip_min,
                                       self.clip_max)
        return ops.stop_gradient(x_adv), state

    def _regularizer_values(self, x, y, loss_fn, training: bool, seed):
        """The regulariser of each example (run where it leaves no trace), its random
        draws from `seed`."""
        epsilon = ops.cast(self.current_epsilon, x.dtype)
        if self.regularizer in ("local_linearity", "adaptive_local_linearity"):
            x_a, x_b, alpha = local_linearity.sample_local_linearity_triplet(
                x, epsilon, seed, self.attack_norm, self.clip_min, self.clip_max)
            return local_linearity.local_linearity_error(self, x_a, x_b, alpha, y, loss_fn,
                                                         training)
        clean = penalty_lib.clean_pass(self, x, y, loss_fn, training)
        if self.regularizer == "gradient_penalty":
            return penalty_lib.penalty_from_clean_pass(
                self, clean, y, loss_fn, h=self.h, attack_norm=self.attack_norm,
                difference="forward", method="finite_difference", training=training)
        noisy = primitives.clip_to_range(
            x + primitives.random_in_ball(ops.shape(x), epsilon, self.attack_norm, seed, x.dtype),
            self.clip_min, self.clip_max)
        first = ops.stop_gradient(clean.gradient)
        second = penalty_lib.clean_pass(self, noisy, y, loss_fn, training).gradient
        lengths = (ops.sqrt(ops.sum(ops.square(first), axis=1))
                   * ops.sqrt(ops.sum(ops.square(second), axis=1)))
        return 1.0 - ops.divide_no_nan(ops.sum(first * second, axis=1), lengths)

    def _adaptive_weight(self, value):
        """ELLE-A: the weight of this step from the batch's error (all replicas' mean),
        and the running mean and variance of the errors (Welford) updated with it."""
        count, mean, m2, weight = [ops.convert_to_tensor(v.value) for v in self.adaptive_state]
        error = backend.current().replica_mean(ops.cast(ops.stop_gradient(value), "float32"))
        spike = ops.logical_and(count >= 2, error > mean + ADAPTIVE_SIGMAS * ops.sqrt(
            ops.divide_no_nan(m2, count)))
        weight = ops.where(spike, self.regularizer_weight, ADAPTIVE_DECAY * weight)
        finite = ops.isfinite(error)
        delta = error - mean
        new_mean = mean + delta / (count + 1.0)
        updates = (count + 1.0, new_mean, m2 + delta * (error - new_mean), weight)
        for variable, new, old in zip(self.adaptive_state, updates, (count, mean, m2, weight)):
            variable.assign(ops.where(finite, new, old))
        return ops.where(finite, weight, 0.0)

    def _objective(self, x, y, sample_weight, training: bool, weight: Optional[float]):
        """(y_pred, this replica's share of the objective, regularizer, its weight)."""
        penalty_lib.require_targets(y)
        loss_fn = compiled_loss_fn(self)
        x = penalty_lib.as_float(x)
        x_adv, state = self._adversarial(x, y, loss_fn)
        y_pred = self(x_adv, training=training)
        loss = self.compute_loss(x=x_adv, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                 training=training)
        zero = ops.zeros((), loss.dtype)
        if weight is None:
            return y_pred, loss, zero, zero
        seed = self._step_seed(1)  # read here: the scope below maps the model's state only
        with keras.StatelessScope(state_mapping=state):  # the regulariser leaves no trace
            values = self._regularizer_values(x, y, loss_fn, training, seed)
        if sample_weight is not None:
            values = values * ops.reshape(ops.cast(sample_weight, values.dtype), (-1,))
        value = ops.mean(values)
        if self.regularizer == "adaptive_local_linearity":
            weight = ops.cast(self._adaptive_weight(value), value.dtype)
        scale = 0.5 if self.regularizer == "gradient_penalty" else 1.0  # lambda / 2, as the paper
        replicas = backend.current().num_replicas()
        loss = loss + ops.cast(scale * weight * value / replicas, loss.dtype)
        return y_pred, loss, ops.cast(value, loss.dtype), ops.cast(weight, loss.dtype) + zero


class EpsilonRamp(keras.callbacks.Callback):
    """Raises an adversarially trained model's radius linearly to full strength.

    At the start of epoch e (from 0) the radius is epsilon * min(1, (e + 1) / epochs);
    epochs = 0 is no ramp (full strength from the first step).
    """

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = validation.check_number("ramp epochs", epochs, low_open=False, integer=True,
                                              hint="(0: no ramp)")

    def on_epoch_begin(self, epoch, logs=None):
        share = min(1.0, (epoch + 1) / self.epochs) if self.epochs else 1.0
        self.model.current_epsilon.assign(self.model.epsilon * share)


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
      epsilon: the radius.
      clip_min, clip_max: the data range.
      attack_norm: "linf" or "l2", the ball's norm.
    """

    def __init__(self, x, y, epsilon: float, clip_min: float = 0.0, clip_max: float = 1.0,
                 attack_norm: str = "linf"):
        super().__init__()
        x = np.asarray(x, np.float32)
        self.epsilon, self.clip_min, self.clip_max = _check_range(
            epsilon, clip_min, clip_max, attack_norm, math.prod(x.shape[1:]))
        self.attack_norm = attack_norm
        self.x, self.y = x, np.reshape(y, -1)
        self.best = (0.0, 0.0)  # (PGD accuracy, FGSM accuracy then)
        self.collapsed_at = None

    def _accuracy(self, steps: int, step_size: float) -> float:
        model = self.model
        x_adv = perturb(model, compiled_loss_fn(model), self.x, self.y, self.epsilon, steps,
                        step_size, np.zeros(2, np.int32), self.clip_min, self.clip_max,
                        self.attack_norm)
        predicted = np.argmax(model.predict(ops.convert_to_numpy(x_adv), verbose=0), axis=1)
        return float(np.mean(predicted == self.y))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        pgd = self._accuracy(MONITOR_PGD_STEPS, MONITOR_PGD_STEP_FRACTION / MONITOR_PGD_STEPS)
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
