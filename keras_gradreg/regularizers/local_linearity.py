"""The local-linearity error and its sampler: forward passes only.

ELLE (Abad Rocamora et al., "Efficient local linearity regularization to overcome
catastrophic overfitting", ICLR 2024) regularises single-step adversarial training with
how far the loss is from linear along a random chord of the radius-ball,

    E = (loss(x_c) - (1 - alpha) * loss(x_a) - alpha * loss(x_b)) ** 2,
    x_c = (1 - alpha) * x_a + alpha * x_b,

with x_a, x_b uniform in the ball around x and alpha ~ U[0, 1]: three forward passes
and first derivatives only (no double backpropagation, unlike GradAlign or LLR), the
way this library's penalty avoids it.
"""

from typing import Any

import keras
from keras import ops

from keras_gradreg import backend
from keras_gradreg import per_example
from keras_gradreg.attacks import ball
from keras_gradreg.regularizers.base import Context
from keras_gradreg.regularizers.base import Regularizer

ADAPTIVE_DECAY = 0.99
"""ELLE-A: the regulariser weight's decay per step after a spike (Abad Rocamora et al. 2024)."""
ADAPTIVE_SIGMAS = 2.0
"""ELLE-A: a spike is an error above the mean + ADAPTIVE_SIGMAS std of its past values."""


def local_linearity_error(model: Any, x_a: Any, x_b: Any, alpha: Any, y: Any, loss_fn: Any,
                          training: bool = True) -> Any:
    """Per-example local-linearity error of the loss on the chord from x_a to x_b.

    A deterministic function of the triplet, differentiable with respect to the weights
    with first derivatives only, on every Keras backend.

    Args:
      model: a Keras model (or layer), called as `model(x, training=training)`.
      x_a: a batch of points (one input tensor).
      x_b: a second batch, of x_a's shape.
      alpha: per-example interpolation weights, shape (batch,).
      y: the targets, as the loss expects them.
      loss_fn: a Keras loss (name or object) or a callable returning per-example values.
      training: passed to the model in each of the three passes.

    Returns:
      (batch,) values `(loss(x_c) - (1 - alpha) loss(x_a) - alpha loss(x_b))^2`, with
      `x_c = (1 - alpha) x_a + alpha x_b`, in float32 (float64 for a float64 model).
    """
    loss_fn = per_example.loss_fn(loss_fn)
    x_a, x_b = per_example.as_float(x_a), per_example.as_float(x_b)
    alpha = ops.cast(ops.reshape(alpha, (-1,)), x_a.dtype)
    mix = ops.reshape(alpha, (-1,) + (1,) * (len(x_a.shape) - 1))
    x_c = (1.0 - mix) * x_a + mix * x_b
    loss_a, loss_b, loss_c = (loss_fn(y, model(t, training=training)) for t in (x_a, x_b, x_c))
    alpha = ops.cast(alpha, loss_c.dtype)
    return ops.square(loss_c - (1.0 - alpha) * loss_a - alpha * loss_b)


def sample_local_linearity_triplet(x: Any, epsilon: Any, seed: Any, attack_norm: str = "linf",
                                   clip_min: float = 0.0, clip_max: float = 1.0) -> tuple:
    """Draws (x_a, x_b, alpha): x_a and x_b uniform in the epsilon-ball around x (then
    clipped to the data range), alpha ~ U[0, 1] per example.

    A function of `seed` only (two integers, e.g. (run seed, optimizer step)), drawn by
    the backend module, so a resumed run draws what an uninterrupted one would.

    Args:
      x: a batch of inputs (one tensor).
      epsilon: the radius.
      seed: shape (2,) integers.
      attack_norm: "linf" or "l2", the ball's norm.
      clip_min: the data range's lowest value.
      clip_max: the data range's highest value.

    Returns:
      (x_a, x_b, alpha), shaped like x, x and (batch,).
    """
    x = per_example.as_float(x)
    shape = ops.shape(x)
    x_a, x_b = (ball.clip_to_range(
        x + ball.uniform_in_ball(shape, epsilon, attack_norm, ball.seed_stream(seed, stream),
                                 x.dtype),
        clip_min, clip_max) for stream in (0, 1))
    alpha = backend.current().stateless_uniform(shape[:1], ball.seed_stream(seed, 2),
                                                0.0, 1.0, x.dtype)
    return x_a, x_b, alpha


class LocalLinearity(Regularizer):
    """ELLE: the batch's local-linearity error on a triplet drawn in the ball (three
    forward passes, first derivatives only)."""

    def values(self, context: Context) -> Any:
        model = context.model
        x_a, x_b, alpha = sample_local_linearity_triplet(
            context.x, context.epsilon, context.seed, model.attack_norm, model.clip_min,
            model.clip_max)
        return local_linearity_error(model, x_a, x_b, alpha, context.y, context.loss_fn,
                                     context.training)


class AdaptiveLocalLinearity(LocalLinearity):
    """ELLE-A: ELLE's error with the weight 0 until the error exceeds the mean +
    ADAPTIVE_SIGMAS std of its past values (from the third step on), then the full
    weight, decaying by ADAPTIVE_DECAY a step. Its running statistics are variables of
    the model (`adaptive_state`): saved with it and resumed."""

    def build(self, model: Any) -> None:
        model.adaptive_state = [keras.Variable(0.0, trainable=False, name=name,
                                               aggregation="only_first_replica")
                                for name in ("error_count", "error_mean", "error_m2", "weight")]

    def weight(self, model: Any, value: Any, weight: float) -> Any:
        """The weight of this step from the batch's error (all replicas' mean), and the
        running mean and variance of the errors (Welford) updated with it."""
        count, mean, m2, current = [ops.convert_to_tensor(v.value) for v in model.adaptive_state]
        error = backend.current().replica_mean(ops.cast(ops.stop_gradient(value), "float32"))
        spike = ops.logical_and(count >= 2, error > mean + ADAPTIVE_SIGMAS * ops.sqrt(
            ops.divide_no_nan(m2, count)))
        current = ops.where(spike, weight, ADAPTIVE_DECAY * current)
        finite = ops.isfinite(error)
        delta = error - mean
        new_mean = mean + delta / (count + 1.0)
        updates = (count + 1.0, new_mean, m2 + delta * (error - new_mean), current)
        for variable, new, old in zip(model.adaptive_state, updates, (count, mean, m2, current)):
            variable.assign(ops.where(finite, new, old))
        return ops.where(finite, current, 0.0)
