"""The minimum-distance protocol's search: each image's smallest radius at which a
fixed-budget attack breaks it, found per image by a geometric phase and a bisection."""

from typing import Callable, Optional

import numpy as np

from keras_gradreg.attacks.judge import Judge

WARM_BRACKET = 1 / 16
"""A warm-started search's first step down: an attack that breaks an image at the best
distance so far is tried next at (1 - WARM_BRACKET) of it. Attacks that break an image
at a radius mostly fail a few percent below it, so most searches then bisect a bracket
of that relative width (8 halvings to search_tolerance's default) instead of the data
range's."""


def search(attack: Callable, judge: Judge, x: np.ndarray, y: np.ndarray, max_epsilon: float,
           steps: int, tolerance: float = 0.0, start: Optional[np.ndarray] = None) -> tuple:
    """Each image's smallest adversarial distance an attack finds, by a per-image search.

    The attack first runs at `max_epsilon` (or at the image's `start`); images it cannot
    break there get distance inf. Then, for every broken image, the radius is divided
    by 4 until the attack fails (geometric phase; from a start, the first step is to
    (1 - WARM_BRACKET) of it), then bisected between the largest failing and smallest
    succeeding radius, until the bracket's relative width is at most `tolerance` or
    `steps` radii were tried. Only verified examples count (misclassified and in range,
    see `Judge.verify`), and the distance recorded is the norm of the best one's actual
    perturbation, which is at most the bracket's upper end.

    Args:
      attack: f(x, y, epsilon) -> x_adv, one radius per image.
      judge: verifies the examples and measures their distance.
      x: images.
      y: their integer labels.
      max_epsilon: the largest radius tried.
      steps: radii tried per image after the first, at most.
      tolerance: relative bracket width at which an image's search stops.
      start: per image, where to run first (e.g. the best distance earlier attacks
        found; inf or None: at max_epsilon).

    Returns:
      (distances, adversarial examples, relative width of each final bracket): inf and
      x itself where the attack failed.
    """
    n = len(x)
    first = np.full(n, float(max_epsilon)) if start is None else np.minimum(start, max_epsilon)
    hi = first.copy()
    lo = np.zeros(n)
    shrink = np.where(first < max_epsilon, 1 - WARM_BRACKET, 1 / 4)
    best = np.array(x, copy=True)
    distance = np.full(n, np.inf)

    def try_epsilon(idx, epsilon):
        x_adv = np.asarray(attack(x[idx], y[idx], epsilon))
        ok, dist = judge.verify(x_adv, x[idx], y[idx])
        better = ok & (dist < distance[idx])
        distance[idx[better]] = dist[better]
        best[idx[better]] = x_adv[better]
        return ok

    idx = np.flatnonzero(try_epsilon(np.arange(n), hi))
    for _ in range(steps):
        idx = idx[(hi[idx] - lo[idx]) > tolerance * hi[idx]]
        if not len(idx):
            break
        epsilon = np.where(lo[idx] > 0, (lo[idx] + hi[idx]) / 2, hi[idx] * shrink[idx])
        ok = try_epsilon(idx, epsilon)
        hi[idx] = np.where(ok, np.minimum(epsilon, hi[idx]), hi[idx])
        lo[idx] = np.where(ok, lo[idx], epsilon)
        shrink[idx] = 1 / 4
    hi = np.minimum(hi, distance)  # the bracket's top is the best verified distance
    width = np.where(np.isfinite(distance), (hi - lo) / np.maximum(hi, 1e-300), 0.0)
    return distance, best, width
