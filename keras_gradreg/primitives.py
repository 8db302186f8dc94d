"""Attack primitives: the l_inf and l2 balls within the data range, written once in keras.ops.

Everything that perturbs an input (adversarial training, the local-linearity sampler,
the robustness monitor) builds on these, on both Keras backends. One step-size
convention: a step is `step_size * epsilon` along the ascent direction, so `step_size`
is always a multiple of the radius (FGSM-RS: 1.25, N-FGSM: 1.0).

Norms are per example, over every axis but the first (the batch).
"""

import math
from typing import Any

from keras import ops

from keras_gradreg import validation

BALL_NORMS = ("linf", "l2")
"""The norms of the balls that adversarial training and the samplers perturb in."""


def check_ball_norm(norm: str) -> str:
    """Returns norm; ValueError naming it and BALL_NORMS otherwise."""
    return validation.check_choice("attack_norm", norm, BALL_NORMS)


def _example_axes(t: Any) -> tuple:
    """The axes of t that belong to one example (all but the batch axis)."""
    return tuple(range(1, len(t.shape)))


def per_example(values: Any, like: Any) -> Any:
    """Per-example values, shape (batch,), as (batch, 1, ..., 1) to scale tensors like `like`."""
    return ops.reshape(values, (-1,) + (1,) * (len(like.shape) - 1))


def _radius(epsilon: Any, like: Any) -> Any:
    """A radius (a number, or one per example of shape (batch,)) that broadcasts against `like`."""
    return per_example(epsilon, like) if len(getattr(epsilon, "shape", ())) == 1 else epsilon


def norm(t: Any, attack_norm: str) -> Any:
    """Per-example ||t|| in the ball's norm: max |t_j| ("linf") or sqrt(sum t_j^2) ("l2")."""
    if check_ball_norm(attack_norm) == "linf":
        return ops.max(ops.abs(t), axis=_example_axes(t))
    return ops.sqrt(ops.sum(ops.square(t), axis=_example_axes(t)))


def ascent_direction(gradient: Any, attack_norm: str) -> Any:
    """The steepest-ascent unit step for the norm: sign(g) for "linf" (||.||_inf = 1),
    g / ||g||_2 for "l2" (0 where g = 0)."""
    if check_ball_norm(attack_norm) == "linf":
        return ops.sign(gradient)
    return ops.divide_no_nan(gradient, per_example(norm(gradient, "l2"), gradient))


def ascend(x_adv: Any, gradient: Any, epsilon: Any, step_size: float, attack_norm: str) -> Any:
    """One step of `step_size * epsilon` from x_adv along the ascent direction of gradient."""
    return x_adv + step_size * epsilon * ascent_direction(gradient, attack_norm)


def clip_to_range(x: Any, clip_min: float, clip_max: float) -> Any:
    """x clipped to the data range [clip_min, clip_max]."""
    return ops.clip(x, clip_min, clip_max)


def project(x_adv: Any, x: Any, epsilon: Any, attack_norm: str, clip_min: float,
            clip_max: float) -> Any:
    """x_adv moved into the epsilon-ball around x, then into the data range.

    `epsilon`: one radius, or one per example (shape (batch,) or (batch, 1, ..., 1)).

    l_inf: the exact projection onto the intersection (a box). l2: the perturbation is
    scaled down to norm epsilon, then clipped to the range, which can only shorten it,
    so the result is inside both (the usual PGD-l2 step, not the exact projection onto
    the intersection).
    """
    epsilon = _radius(epsilon, x)
    if check_ball_norm(attack_norm) == "linf":
        inside = ops.clip(x_adv, x - epsilon, x + epsilon)
    else:
        delta = x_adv - x
        length = per_example(norm(delta, "l2"), delta)
        scale = ops.minimum(ops.ones_like(length), ops.divide_no_nan(epsilon * ops.ones_like(length),
                                                                     length))
        inside = x + scale * delta
    return clip_to_range(inside, clip_min, clip_max)


def random_in_ball(shape: Any, epsilon: Any, attack_norm: str, seed: Any, dtype: str) -> Any:
    """A perturbation drawn uniformly from the epsilon-ball, one per example.

    l_inf: each entry uniform in [-epsilon, epsilon]. l2: uniform in the ball's volume
    (a Gaussian direction, normalised, times epsilon * u^(1/n), u ~ U[0, 1], n the
    entries per example). A function of `seed` (shape (2,), e.g. (run seed, step)) only,
    drawn by the backend module (keras_gradreg/backend/), so a resumed run draws what
    an uninterrupted one would and R replicas draw what one device would.
    """
    from keras_gradreg import backend  # here: the backend modules import the penalty, which imports this

    draw = backend.current()
    if check_ball_norm(attack_norm) == "linf":
        return epsilon * draw.stateless_uniform(shape, seed, -1.0, 1.0, dtype)
    gaussian = draw.stateless_normal(shape, seed, dtype)
    radius = ops.power(draw.stateless_uniform(shape[:1], seed + 1, 0.0, 1.0, dtype),
                       1.0 / math.prod(shape[1:]))  # images: the entries per example are static
    unit = ops.divide_no_nan(gaussian, per_example(norm(gaussian, "l2"), gaussian))
    return epsilon * per_example(radius, unit) * unit


def max_radius(attack_norm: str, clip_min: float, clip_max: float, size: int) -> float:
    """The largest useful radius: the data range's diameter in the norm (l_inf: its
    width; l2: width * sqrt(entries per example))."""
    width = clip_max - clip_min
    return width if check_ball_norm(attack_norm) == "linf" else width * size ** 0.5


SEED_STREAM = 2**20
"""Offset between the random streams a step draws from one (run seed, step) pair."""


def seed_stream(seed: Any, stream: int) -> Any:
    """The seed of the stream-th independent draw of a step: (seed[0] + stream * SEED_STREAM,
    seed[1]). Stream 0 is the seed itself."""
    if not stream:
        return seed
    seed = ops.convert_to_tensor(seed)
    return seed + ops.convert_to_tensor([stream * SEED_STREAM, 0], dtype=seed.dtype)
