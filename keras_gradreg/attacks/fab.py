"""FAB-T (Croce & Hein, ICML 2020, "Minimally distorted adversarial examples with a fast
adaptive boundary attack"), targeted, batched in keras.ops: steps onto the linearised
boundary with a target class, biased towards the original image, and a backward step
after each success; it minimises the distance itself.
"""

import math
from typing import Any, Callable

from keras import ops

from keras_gradreg import backend
from keras_gradreg import per_example
from keras_gradreg.attacks import judge
from keras_gradreg.attacks.base import Attack

ALPHA_MAX, ETA, BETA = 0.1, 1.05, 0.9
"""FAB's largest bias to the original image, overshoot and backward step (the paper's)."""
BATCH_MULTIPLE = 32
"""FAB's batches are padded to a multiple of this (by repeating the last image: FAB is
deterministic and treats each image on its own), so XLA compiles its fused bisection
for a few batch sizes."""


def _boundary_step(w: Any, c: Any, lower: Any, upper: Any, attack_norm: str,
                   iterations: int = 30) -> Any:
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
    reach = ops.where(w > 0, upper, -lower)
    size = ops.abs(w)
    scale = ops.ones_like(size) if attack_norm == "linf" else size

    def moved(t):
        return ops.minimum(t[:, None] * scale, reach)

    lo = ops.zeros_like(c)
    hi = ops.max(ops.divide_no_nan(reach, scale), axis=1)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        ok = ops.sum(size * moved(mid), axis=1) >= c
        lo, hi = ops.where(ok, lo, mid), ops.where(ok, mid, hi)
    return ops.sign(w) * moved(ops.where(c > 0, hi, 0.0))


def _step(model_fn: Callable, flat_x, shape, y, targets, attack_norm: str, clip_min: float,
          clip_max: float, boundary_step: Callable) -> Callable:
    """FAB's iteration on flattened images: (current, best, best_distance) -> the next."""

    def gap_at(images):
        logits = ops.cast(model_fn(images), "float32")
        gap = (ops.take_along_axis(logits, ops.reshape(targets, (-1, 1)), axis=1)
               - ops.take_along_axis(logits, ops.reshape(y, (-1, 1)), axis=1))
        return gap[:, 0], None

    def distance(flat):
        return per_example.norm(flat - flat_x, attack_norm)

    def step(current, best, best_distance):
        gap, _, grad = backend.value_and_gradient(gap_at, ops.reshape(current, shape))
        gap, grad = ops.stop_gradient(gap), ops.reshape(ops.stop_gradient(grad), ops.shape(flat_x))
        from_current = boundary_step(grad, -gap, clip_min - current, clip_max - current,
                                     attack_norm)
        level = -gap - ops.sum(grad * (flat_x - current), axis=1)
        from_image = boundary_step(grad, level, clip_min - flat_x, clip_max - flat_x, attack_norm)
        a = per_example.norm(from_current, attack_norm)
        b = per_example.norm(from_image, attack_norm)
        alpha = ops.clip(ops.divide_no_nan(a, a + b), 0.0, ALPHA_MAX)[:, None]
        current = ops.clip((1 - alpha) * (current + ETA * from_current)
                           + alpha * (flat_x + ETA * from_image), clip_min, clip_max)
        fooled = judge.fooled(model_fn(ops.reshape(current, shape)), y)
        closer = fooled & (distance(current) < best_distance)
        best = ops.where(closer[:, None], current, best)
        best_distance = ops.where(closer, distance(current), best_distance)
        current = ops.where(fooled[:, None], flat_x + BETA * (current - flat_x), current)
        return current, best, best_distance

    return step


def fab(model_fn: Callable, x: Any, y: Any, *, targets: Any, attack_norm: str, steps: int,
        clip_min: float, clip_max: float) -> Any:
    """Targeted FAB from the image itself (Croce & Hein, ICML 2020, Sec. 3).

    Each step linearises z_t - z_y at the iterate, projects the iterate and the original
    image onto its zero set (inside the data range), and moves to a convex combination
    of the two projections (weight on the original's at most ALPHA_MAX, both
    overshot by ETA); a misclassified iterate (judge.fooled) is recorded if closer than
    the best so far and pulled back towards the image by BETA. The bisection of each
    projection is one fused kernel where the backend has them (backend.*.fused).

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
    shape = ops.shape(x)
    flat_x = ops.reshape(x, (-1, math.prod(x.shape[1:])))
    y, targets = ops.cast(y, "int32"), ops.cast(targets, "int32")
    step = _step(model_fn, flat_x, shape, y, targets, attack_norm, clip_min, clip_max,
                 backend.current().fused(_boundary_step))

    def body(k, state):
        return step(*state)

    start = (flat_x, flat_x, ops.zeros_like(flat_x[:, 0]) + float("inf"))
    _, best, _ = ops.fori_loop(0, steps, body, start)
    return ops.reshape(best, shape)


def _build(model_fn, budget, attack_norm, clip_min, clip_max, top_k):
    """FAB-T's core (see attacks.base): the budget's steps, at every epsilon."""
    del top_k

    def core(x, y, epsilon, targets):
        del epsilon  # FAB minimises the distance itself
        return fab(model_fn, x, y, targets=targets, attack_norm=attack_norm,
                   steps=budget.fab_steps, clip_min=clip_min, clip_max=clip_max)

    return core


FAB_T = Attack("fab_t", "FAB, targeted", _build, autoattack=True, targeted=True,
               minimises_distance=True, deterministic=True, batch_multiple=BATCH_MULTIPLE)
"""AutoAttack's FAB-T (Croce & Hein, ICML 2020)."""
