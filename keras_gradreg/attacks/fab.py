"""FAB-T (Croce & Hein, ICML 2020, "Minimally distorted adversarial examples with a fast
adaptive boundary attack"), targeted, batched in TensorFlow: steps onto the linearised
boundary with a target class, biased towards the original image, and a backward step
after each success; it minimises the distance itself.
"""

from typing import Callable

import numpy as np
import tensorflow as tf

from keras_gradreg import backend
from keras_gradreg import per_example
from keras_gradreg.attacks import ball

ALPHA_MAX, ETA, BETA = 0.1, 1.05, 0.9
"""FAB's largest bias to the original image, overshoot and backward step (the paper's)."""
BATCH_MULTIPLE = 32
"""FAB's batches are padded to a multiple of this (by repeating the last image: FAB is
deterministic and treats each image on its own), so XLA compiles a few batch sizes."""


def _boundary_step(w: tf.Tensor, c: tf.Tensor, lower: tf.Tensor, upper: tf.Tensor,
                   attack_norm: str, iterations: int = 30) -> tf.Tensor:
    """The smallest d (in attack_norm) with w.d >= c and lower <= d <= upper, per row.

    The best d moves coordinate i by sign(w_i) min(t, r_i) (l_inf) or sign(w_i)
    min(t |w_i|, r_i) (l2: the KKT point), with r_i >= 0 how far the box lets it go;
    w.d grows with t, which is found by bisection. Where no point of the box reaches
    c, the farthest one is returned; where c <= 0, zero.

    Args:
      w: (batch, dims) normals.
      c: (batch,) levels.
      lower: (batch, dims) lower corner of the box, <= 0.
      upper: (batch, dims) upper corner of the box, >= 0.
      attack_norm: "linf" or "l2".
      iterations: bisection steps.

    Returns:
      d, (batch, dims).
    """
    reach = tf.where(w > 0, upper, -lower)
    size = tf.abs(w)
    scale = tf.ones_like(size) if attack_norm == "linf" else size

    def moved(t):
        return tf.minimum(t[:, None] * scale, reach)

    lo = tf.zeros_like(c)
    hi = tf.reduce_max(tf.math.divide_no_nan(reach, scale), axis=1)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        ok = tf.reduce_sum(size * moved(mid), axis=1) >= c
        lo, hi = tf.where(ok, lo, mid), tf.where(ok, mid, hi)
    return tf.sign(w) * moved(tf.where(c > 0, hi, 0.0))


_xla_boundary_step = tf.function(_boundary_step, jit_compile=True)


def _fused_boundary_step(w: tf.Tensor, c: tf.Tensor, lower: tf.Tensor, upper: tf.Tensor,
                         attack_norm: str) -> tf.Tensor:
    """_boundary_step as one XLA kernel: its bisection is 30 passes of small element-wise
    ops over the batch, which as separate TensorFlow ops took a large share of a FAB step
    (docs/cost.md). XLA compiles it once per batch size, so FAB's batches are padded
    (BATCH_MULTIPLE). The kernel's output has no static shape: w's is restored."""
    return tf.ensure_shape(_xla_boundary_step(w, c, lower, upper, attack_norm), w.shape)


def fab(model_fn: Callable, x: tf.Tensor, y: tf.Tensor, *, targets: tf.Tensor, attack_norm: str,
        steps: int, clip_min: float, clip_max: float) -> tf.Tensor:
    """Targeted FAB from the image itself (Croce & Hein, ICML 2020, Sec. 3).

    Each step linearises z_t - z_y at the iterate, projects the iterate and the original
    image onto its zero set (inside the data range), and moves to a convex combination
    of the two projections (weight on the original's at most ALPHA_MAX, both
    overshot by ETA); a misclassified iterate is recorded if closer than the best
    so far and pulled back towards the image by BETA.

    Args:
      model_fn: images -> logits.
      x: images.
      y: their integer labels.
      targets: (batch,) target classes.
      attack_norm: "linf" or "l2".
      steps: iterations.
      clip_min: the data range's lowest value.
      clip_max: the data range's highest value.

    Returns:
      The closest misclassified point met per image, or x where none.
    """
    shape = tf.shape(x)
    flat_x = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])  # keeps a static batch size

    def gap_at(images):
        logits = tf.cast(model_fn(images), tf.float32)
        return tf.gather(logits, targets, batch_dims=1) - tf.gather(logits, y, batch_dims=1), None

    def gap_and_grad(images):
        gap, _, gradient = backend.value_and_gradient(gap_at, images)
        return gap, tf.reshape(gradient, tf.shape(flat_x))

    def misclassified(images):
        return tf.not_equal(tf.argmax(model_fn(images), axis=-1, output_type=y.dtype), y)

    def distance(flat):
        return per_example.norm(flat - flat_x, attack_norm)

    def body(k, current, best, best_distance):
        gap, grad = gap_and_grad(tf.reshape(current, shape))
        from_current = _fused_boundary_step(grad, -gap, clip_min - current, clip_max - current,
                                            attack_norm)
        level = -gap - tf.reduce_sum(grad * (flat_x - current), axis=1)
        from_image = _fused_boundary_step(grad, level, clip_min - flat_x, clip_max - flat_x,
                                          attack_norm)
        a, b = per_example.norm(from_current, attack_norm), per_example.norm(from_image, attack_norm)
        alpha = tf.clip_by_value(tf.math.divide_no_nan(a, a + b), 0.0, ALPHA_MAX)[:, None]
        current = tf.clip_by_value((1 - alpha) * (current + ETA * from_current)
                                   + alpha * (flat_x + ETA * from_image), clip_min, clip_max)
        fooled = misclassified(tf.reshape(current, shape))
        closer = fooled & (distance(current) < best_distance)
        best = tf.where(closer[:, None], current, best)
        best_distance = tf.where(closer, distance(current), best_distance)
        current = tf.where(fooled[:, None], flat_x + BETA * (current - flat_x), current)
        return (k + 1, tf.ensure_shape(current, flat_x.shape), tf.ensure_shape(best, flat_x.shape),
                tf.ensure_shape(best_distance, flat_x.shape[:1]))

    start = (tf.constant(0), flat_x, flat_x, tf.zeros_like(flat_x[:, 0]) + np.inf)
    _, _, best, _ = tf.while_loop(lambda k, *_: k < steps, body, start)
    return tf.reshape(best, shape)
