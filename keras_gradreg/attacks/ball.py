"""The lp ball within the data range, written once in keras.ops for every attack.

Everything that perturbs an input (the attacks, adversarial training, the samplers of
the regularisers, the held-out monitor, the penalty's direction) builds on these, on
every Keras backend.

Conventions, each written once here:

- a norm is per example, over every axis but the first (the batch): `per_example.norm`;
- a step is `step_size * epsilon` along the ascent direction, so `step_size` is always a
  multiple of epsilon (FGSM-RS: 1.25, N-FGSM: 1.0, a PGD step: reach / steps);
- epsilon is one number, or one per example (shape (batch,));
- a random draw is a function of a stateless seed of two integers, (seed, counter): a
  run's seed and its optimizer step in training, an attack's seed and 0 (or its query)
  in evaluation; `seed_stream` gives a step's further independent draws;
- "within epsilon" allows the rounding of float32 images (`within_epsilon`).
"""

import math
from typing import Any, Optional

import numpy as np
from keras import ops

from keras_gradreg import backend
from keras_gradreg import deprecation
from keras_gradreg import per_example
from keras_gradreg import validation

NORMS = ("linf", "l2")
"""The attack norms whose balls the attacks, adversarial training and the bounds work in
(of per_example.ATTACK_NORMS: projections and random draws exist for these)."""
ROUNDING = 1e-5
"""Relative slack when checking that an example lies within epsilon: float32 images and
norms computed in float32 (a projection onto the l2 ball) round by about this."""
SEED_STREAM = 2**20
"""Offset between the random streams a step draws from one (seed, counter) pair."""


def check_norm(attack_norm: str) -> str:
    """Returns attack_norm; ValueError naming it and NORMS otherwise."""
    return per_example.check_attack_norm(attack_norm, NORMS)


def max_epsilon(attack_norm: str, clip_min: float, clip_max: float, size: Optional[int]) -> float:
    """The largest useful epsilon: the data range's diameter in the norm (l_inf: its
    width; l2: width * sqrt(entries per example), inf when that number is unknown)."""
    width = clip_max - clip_min
    if check_norm(attack_norm) == "linf":
        return width
    return width * size ** 0.5 if size else math.inf


def check_epsilon(epsilon: Any, attack_norm: str, clip_min: float = 0.0, clip_max: float = 1.0,
                  size: Optional[int] = None, name: str = "epsilon") -> float:
    """An epsilon as a float, or a ValueError naming it: a number > 0, at most the data
    range's diameter in the norm (`max_epsilon`). Numbers given as text (flags) are read."""
    if isinstance(epsilon, str):
        try:
            epsilon = float(epsilon)
        except ValueError:
            pass  # check_number names it
    high = max_epsilon(attack_norm, clip_min, clip_max, size)
    hint = (f"(an l_inf radius within the data range [{clip_min:g}, {clip_max:g}]; an l2 "
            "radius needs attack_norm='l2')" if attack_norm == "linf" else
            f"(at most the l2 diameter of the data range, {high:g})")
    return validation.check_number(name, epsilon, high=high, hint=hint)


def check_epsilons(epsilons: Any, attack_norm: str, clip_min: float = 0.0, clip_max: float = 1.0,
                   size: Optional[int] = None) -> tuple:
    """Several epsilons as floats, in the order given (see `check_epsilon`); ValueError for
    none, or a repeated one."""
    if isinstance(epsilons, (str, int, float)) or not len(epsilons):
        raise ValueError(f"epsilons={epsilons!r} names no radius; pass one or more numbers.")
    checked = tuple(check_epsilon(e, attack_norm, clip_min, clip_max, size) for e in epsilons)
    if len(set(checked)) < len(checked):
        raise ValueError(f"epsilons={list(epsilons)!r} repeats a radius; each is used once.")
    return checked


def broadcastable(epsilon: Any, rank: int) -> Any:
    """epsilon (a number, or one per example of shape (batch,)) so that it broadcasts
    against tensors of that rank."""
    if not hasattr(epsilon, "shape"):
        return epsilon
    epsilon = ops.convert_to_tensor(epsilon)  # not a NumPy array, which PyTorch's refuse
    return epsilon if len(epsilon.shape) != 1 else ops.reshape(epsilon, (-1,) + (1,) * (rank - 1))


def ascent_direction(gradient: Any, attack_norm: str, unit_l2: bool = False) -> Any:
    """The steepest-ascent step d of gradient g, per example: g . d is ||g||_*, the dual
    norm, for a unit step in the attack norm.

    Args:
      gradient: g, shape (batch, ...).
      attack_norm: "linf" (d = sign(g)), "l2" (d = g / ||g||_2) or "l1" (d = sign(g_j)
        at j = argmax |g_j|, 0 elsewhere); 0 where g = 0.
      unit_l2: against "linf", sign(g) / sqrt(N) (N entries per example) instead: unit
        length in l2 where no entry of g is 0, the finite-difference penalty's direction
        in the paper and its reference code (the others already have unit l2 length).

    Returns:
      d, shaped like g.
    """
    attack_norm = per_example.check_attack_norm(attack_norm)
    gradient = ops.convert_to_tensor(gradient)
    if attack_norm == "linf":
        sign = ops.sign(gradient)
        if not unit_l2:
            return sign
        entries = ops.shape(per_example.flatten([gradient]))[1]
        return sign * ops.rsqrt(ops.cast(entries, gradient.dtype))
    if attack_norm == "l2":
        return ops.divide_no_nan(gradient, per_example.broadcast(
            per_example.norm(gradient, "l2"), gradient))
    flat = per_example.flatten([gradient])
    largest = ops.one_hot(ops.argmax(ops.abs(flat), axis=1), ops.shape(flat)[1], dtype=flat.dtype)
    return ops.reshape(largest * ops.sign(flat), ops.shape(gradient))


def ascend(x_adv: Any, gradient: Any, epsilon: Any, step_size: float, attack_norm: str) -> Any:
    """One step of `step_size * epsilon` from x_adv along the ascent direction of gradient."""
    x_adv = ops.convert_to_tensor(x_adv)
    step = step_size * broadcastable(epsilon, len(x_adv.shape))
    return x_adv + step * ascent_direction(gradient, attack_norm)


def clip_to_range(x: Any, clip_min: float, clip_max: float) -> Any:
    """x clipped to the data range [clip_min, clip_max]."""
    return ops.clip(x, clip_min, clip_max)


def project(x_adv: Any, x: Any, epsilon: Any, attack_norm: str, clip_min: float,
            clip_max: float) -> Any:
    """x_adv moved into the epsilon-ball around x, then into the data range.

    `epsilon`: one number, or one per example (shape (batch,) or (batch, 1, ..., 1)).

    l_inf: the exact projection onto the intersection (a box). l2: the perturbation is
    scaled down to norm epsilon, then clipped to the range, which can only shorten it,
    so the result is inside both (the usual PGD-l2 step, not the exact projection onto
    the intersection).
    """
    x_adv, x = ops.convert_to_tensor(x_adv), ops.convert_to_tensor(x)
    epsilon = broadcastable(epsilon, len(x.shape))
    if check_norm(attack_norm) == "linf":
        inside = ops.clip(x_adv, x - epsilon, x + epsilon)
    else:
        delta = x_adv - x
        length = per_example.broadcast(per_example.norm(delta, "l2"), delta)
        scale = ops.minimum(ops.ones_like(length),
                            ops.divide_no_nan(epsilon * ops.ones_like(length), length))
        inside = x + scale * delta
    return clip_to_range(inside, clip_min, clip_max)


def uniform_in_ball(shape: Any, epsilon: Any, attack_norm: str, seed: Any, dtype: str) -> Any:
    """A perturbation drawn uniformly from the epsilon-ball, one per example.

    l_inf: each entry uniform in [-epsilon, epsilon]. l2: uniform in the ball's volume
    (a Gaussian direction, normalised, times epsilon * u^(1/n), u ~ U[0, 1], n the
    entries per example). A function of `seed` (shape (2,)) only, drawn by the backend
    module (keras_gradreg/backend/), so a resumed run draws what an uninterrupted one
    would and R replicas draw what one device would.
    """
    draw = backend.current()
    epsilon = broadcastable(epsilon, len(shape))
    if check_norm(attack_norm) == "linf":
        return epsilon * draw.stateless_uniform(shape, seed, -1.0, 1.0, dtype)
    gaussian = draw.stateless_normal(shape, seed, dtype)
    length = ops.power(draw.stateless_uniform(shape[:1], seed + 1, 0.0, 1.0, dtype),
                       1.0 / math.prod(shape[1:]))  # images: the entries per example are static
    unit = ops.divide_no_nan(gaussian, per_example.broadcast(per_example.norm(gaussian, "l2"),
                                                             gaussian))
    return epsilon * per_example.broadcast(length, unit) * unit


def on_sphere(shape: Any, epsilon: Any, attack_norm: str, seed: Any, dtype: str) -> Any:
    """A perturbation on the epsilon-sphere, one per example: entries uniform in [-1, 1]
    (l_inf) or Gaussian (l2), scaled to norm epsilon (APGD's start). A function of
    `seed` only, as `uniform_in_ball`."""
    draw = backend.current()
    epsilon = broadcastable(epsilon, len(shape))
    if check_norm(attack_norm) == "linf":
        direction = draw.stateless_uniform(shape, seed, -1.0, 1.0, dtype)
    else:
        direction = draw.stateless_normal(shape, seed, dtype)
    return epsilon * direction / per_example.broadcast(per_example.norm(direction, attack_norm),
                                                       direction)


def seed_stream(seed: Any, stream: int) -> Any:
    """The seed of the stream-th independent draw of a step: (seed[0] + stream * SEED_STREAM,
    seed[1]). Stream 0 is the seed itself."""
    if not stream:
        return seed
    seed = ops.convert_to_tensor(seed)
    return seed + ops.convert_to_tensor([stream * SEED_STREAM, 0], dtype=seed.dtype)


def perturbation_size(x_adv: np.ndarray, x: np.ndarray, attack_norm: str) -> np.ndarray:
    """||x_adv - x|| per image, in float64 (NumPy: what verification measures)."""
    diff = (np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)).reshape(len(x), -1)
    return np.linalg.norm(diff, ord=per_example.NORM_ORDERS[check_norm(attack_norm)], axis=1)


def within_epsilon(size: np.ndarray, epsilon: Any, attack_norm: str, image_shape: tuple,
                   clip_min: float, clip_max: float) -> np.ndarray:
    """size <= epsilon up to the rounding of float32 images: ROUNDING relative, plus one
    float32 spacing of the data range per entry (in l2, sqrt(entries) of them)."""
    entries = 1 if attack_norm == "linf" else math.prod(image_shape)
    spacing = np.spacing(np.float32(max(abs(clip_min), abs(clip_max))))
    return (size <= np.asarray(epsilon, np.float64) * (1 + ROUNDING)
            + float(spacing) * np.sqrt(entries))


__getattr__ = deprecation.module_getattr("keras_gradreg.attacks.ball")
"""Names this module had before 0.8 (deprecation.RENAMED), with a DeprecationWarning."""
