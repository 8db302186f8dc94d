"""The Square Attack (Andriushchenko et al., ECCV 2020), untargeted and gradient-free,
batched in keras.ops, in l_inf and l2: a random search over square windows of side about
sqrt(p h w). Its random numbers are drawn on the host (`draw`), the same on every backend.
"""

from typing import Any, Callable

import numpy as np
from keras import ops

from keras_gradreg import backend
from keras_gradreg import per_example
from keras_gradreg.attacks import ball
from keras_gradreg.attacks import losses
from keras_gradreg.attacks.base import Attack

P_INIT = 0.8
"""Square's initial share of the image a window covers (AutoAttack's value, l_inf and l2)."""
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
"""Where Square's share halves, of 10,000 queries."""


def _square_share(query: Any, queries: int) -> Any:
    """Square's p at a query: P_INIT halved at 10, 50, 200, ... of 10,000."""
    progress = ops.cast(query, "float32") / queries * 10000
    halvings = ops.sum(ops.cast(progress > ops.convert_to_tensor(_HALVINGS, "float32"),
                                "float32"))
    return P_INIT / 2.0 ** halvings


def _bump(i: Any, j: Any, side: Any, transposed: Any) -> Any:
    """Square-L2's pattern at window coordinates (i, j) of a side x side window.

    Each half of the window (split across rows, or across columns where `transposed`)
    holds concentric square rings around the half's centre; ring k of R weighs
    sum_{k <= m < R} 1 / (m + 1)^2, a "pseudo-Gaussian" bump. The first half is
    positive, the second negative (Andriushchenko et al. 2020, Sec. 3.2). Outside the
    window the value is meaningless (callers mask it).
    """
    i, j = ops.where(transposed, j, i), ops.where(transposed, i, j)
    half = side // 2
    first = i < half
    centre_i = ops.cast(ops.where(first, 0, half), "float32") + (
        ops.cast(ops.where(first, half, side - half), "float32") - 1) / 2
    centre_j = (ops.cast(side, "float32") - 1) / 2
    rings = (side - 1) // 2 + 1
    ring = ops.cast(ops.maximum(ops.abs(ops.cast(i, "float32") - centre_i),
                                ops.abs(ops.cast(j, "float32") - centre_j)), "int32")
    longest = max(i.shape[1] or 1, j.shape[2] or 1, i.shape[2] or 1, j.shape[1] or 1)
    below = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, longest + 2) ** 2)])  # m < k
    below = ops.convert_to_tensor(below, "float32")
    weight = ops.take(below, rings) - ops.take(below, ops.clip(ring, 0, rings))
    return ops.where(first, weight, -weight)


def _unit(v, mask=None):
    """v scaled to l2 norm 1 per image and channel (over the mask, if given)."""
    v = v if mask is None else ops.where(mask, v, 0.0)
    return v / ops.maximum(ops.sqrt(ops.sum(ops.square(v), axis=(1, 2), keepdims=True)), 1e-12)


def _grid(height: int, width: int) -> tuple:
    """(rows, columns) indices, broadcastable against (batch, height, width, channels)."""
    return (ops.reshape(ops.arange(height, dtype="int32"), (1, height, 1, 1)),
            ops.reshape(ops.arange(width, dtype="int32"), (1, 1, width, 1)))


def _l2_start(flips: np.ndarray, height: int, width: int) -> np.ndarray:
    """Square-l2's start direction (unit l2 norm per image): a grid of +-bumps (see
    `_bump`), the tiles' signs and orientations the flips'."""
    n, tiles_h, tiles_w, double = flips.shape
    channels, tile = double // 2, max(height // 5, 1)
    top, left = (height - tiles_h * tile) // 2, (width - tiles_w * tile) // 2
    by_tile = np.repeat(np.repeat(flips, tile, axis=1), tile, axis=2)
    by_tile = np.pad(by_tile, ((0, 0), (top, height - top - tiles_h * tile),
                               (left, width - left - tiles_w * tile), (0, 0)))
    rows, cols = _grid(height, width)
    i, j = rows - top, cols - left
    inside = (i >= 0) & (i < tiles_h * tile) & (j >= 0) & (j < tiles_w * tile)
    pattern = _bump(i % tile, j % tile, tile, by_tile[..., channels:] > 0)
    start = _unit(ops.where(inside, pattern * by_tile[..., :channels], 0.0))
    return ops.convert_to_numpy(start / np.sqrt(channels)).astype(np.float32)


def draw(rngs: list, x: np.ndarray, budget: Any, attack_norm: str) -> tuple:
    """Square's random numbers for a batch: the start direction and, per query, a window's
    corner and signs (l_inf), or two windows' corners and a bump's signs and orientation
    (l2); a query's corner is a share of the free rows and of the free columns. The
    query's arrays are (queries, ..., batch, ...). Each kind of number has a stream of its
    own per image, so query k's numbers do not depend on the budget: a run of more
    queries passes through the state of a shorter one."""
    _, height, width, channels = x.shape
    queries = budget.square_queries
    tile = max(height // 5, 1)
    streams = [rng.spawn(4) for rng in rngs]

    def per_image(kind, axis, sample):
        return np.stack([sample(s[kind]) for s in streams], axis=axis).astype(np.float32)

    def signs(*shape):
        return lambda rng: rng.integers(0, 2, shape) * 2.0 - 1

    def corners(kind):
        return per_image(kind, 2, lambda rng: rng.uniform(0, 1, (queries, 2)))

    if attack_norm == "linf":
        return (per_image(0, 0, signs(1, width, channels)), corners(1),
                per_image(2, 1, signs(queries, channels)))
    flips = per_image(0, 0, signs(height // tile, width // tile, 2 * channels))
    return (_l2_start(flips, height, width), corners(1), corners(2),
            per_image(3, 1, signs(queries, channels + 1)))


class _Search:
    """What both norms' proposals draw on: the batch's shape and the square windows."""

    def __init__(self, x: Any, queries: int, attack_norm: str):
        _, self.height, self.width, self.channels = x.shape
        self.queries, self.attack_norm = queries, attack_norm
        self.rows, self.cols = _grid(self.height, self.width)

    def window(self, side, corner):
        """A side x side window per image at the corner drawn: (mask, row in it, column)."""
        corner = ops.reshape(corner, (2, -1, 1, 1, 1))
        top = ops.cast(corner[0] * ops.cast(self.height - side + 1, "float32"), "int32")
        left = ops.cast(corner[1] * ops.cast(self.width - side + 1, "float32"), "int32")
        i, j = self.rows - top, self.cols - left
        return (i >= 0) & (i < side) & (j >= 0) & (j < side), i, j

    def side_at(self, k):
        """The window's side at query k: about sqrt(p h w), odd and at least 3 in l2."""
        side = ops.cast(ops.round(ops.sqrt(_square_share(k, self.queries) * self.height
                                           * self.width)), "int32")
        if self.attack_norm == "linf":
            return ops.clip(side, 1, min(self.height, self.width) - 1)
        side = ops.maximum(side, 3)
        return ops.minimum(side + 1 - side % 2, min(self.height, self.width))


def _linf_propose(search: _Search, clip_min: float, clip_max: float) -> Callable:
    """Square-l_inf's query k (Algorithm 2): a window set to +-epsilon, a sign per channel."""

    def propose(k, x, epsilon, x_best, corners, signs):
        mask, _, _ = search.window(search.side_at(k), ops.take(corners, k, axis=0))
        sign = ops.reshape(ops.take(signs, k, axis=0), (-1, 1, 1, search.channels))
        change = epsilon * sign
        candidate = ops.clip(ops.where(mask, x + change, x_best), clip_min, clip_max)
        same = ops.all(ops.abs(candidate - x_best) < 1e-7, axis=(1, 2, 3), keepdims=True)
        return ops.where(mask & same, x - change, candidate)  # a query must change something

    return propose


def _l2_propose(search: _Search, clip_min: float, clip_max: float) -> Callable:
    """Square-l2's query k (Algorithm 3): a second window emptied, its mass, and whatever
    the budget has left, put into a new bump in the first, keeping norm epsilon."""
    del clip_min, clip_max  # the projection clips
    channels = search.channels

    def propose(k, x, epsilon, x_best, corners, emptied_corners, flips):
        side = search.side_at(k)
        flip = ops.reshape(ops.take(flips, k, axis=0), (-1, 1, 1, channels + 1))
        delta = x_best - x
        mask, i, j = search.window(side, ops.take(corners, k, axis=0))
        emptied, _, _ = search.window(side, ops.take(emptied_corners, k, axis=0))
        used = ops.sum(delta ** 2, axis=(1, 2, 3), keepdims=True)
        spare = ops.maximum(epsilon ** 2 - used, 0.0) / channels
        mass = ops.sqrt(ops.sum(ops.square(ops.where(mask | emptied, delta, 0.0)), axis=(1, 2),
                                keepdims=True))
        bump = ops.where(mask, _bump(i, j, side, flip[..., channels:] > 0), 0.0)
        fresh = _unit(bump * flip[..., :channels] + _unit(delta, mask), mask)
        new = ops.where(mask, fresh * ops.sqrt(spare + mass ** 2),
                        ops.where(emptied, 0.0, delta))
        return x + new

    return propose


def square(model_fn: Callable, x: Any, y: Any, epsilon: Any, start: Any, *draws: Any,
           attack_norm: str, queries: int, clip_min: float, clip_max: float,
           top_k: int = 1) -> Any:
    """The Square Attack (Andriushchenko et al., ECCV 2020), untargeted, gradient-free.

    A random search on the logit margin z_y - max_{i != y} z_i: each query changes one
    random square window of side about sqrt(p h w) (p shrinking with the queries) and
    keeps the change if the margin fell; an image is left alone once misclassified.

    Args:
      model_fn: images -> logits.
      x: (batch, height, width, channels) images.
      y: integer labels.
      epsilon: (batch,) radii.
      start: the start's direction (`draw`: stripes of +-1 in l_inf, unit bumps in l2).
      *draws: the queries' random numbers (`draw`).
      attack_norm: "linf" or "l2".
      queries: model queries per image, the start included.
      clip_min: the data range's lowest value.
      clip_max: the data range's highest value.
      top_k: misclassified means the label outside the top k classes: the margin is
        losses.margin's with top_k.

    Returns:
      Per image, the point of smallest margin found.

    Between two model calls one fused kernel (backend.*.fused) keeps the last answer where
    it lowered the margin and builds the next candidate.
    """
    x = ops.convert_to_tensor(x)  # NumPy or tensors
    epsilon = per_example.broadcast(epsilon, x)
    search = _Search(x, queries, attack_norm)
    propose = (_linf_propose if attack_norm == "linf" else _l2_propose)(search, clip_min,
                                                                       clip_max)

    def answer_and_propose(k, logits, candidate, x_best, best):
        """Query k-1's answer kept where its margin fell, then query k's candidate,
        projected."""
        value = -losses.margin(logits, y, top_k)
        better = (value < best) & (best > 0)
        x_best = ops.where(per_example.broadcast(better, x), candidate, x_best)
        best = ops.where(better, value, best)
        k = ops.minimum(k, queries - 1)  # after the last query a proposal nobody asks
        candidate = ball.project(propose(k, x, epsilon, x_best, *draws), x, epsilon,
                                 attack_norm, clip_min, clip_max)
        return x_best, best, candidate, ops.any(best > 0)

    fused = backend.current().fused(answer_and_propose)

    def step(k, logits, candidate, x_best, best):
        x_best, best, candidate, running = fused(k, logits, candidate, x_best, best)
        return (ops.reshape(x_best, ops.shape(x)), ops.reshape(best, ops.shape(x)[:1]),
                ops.reshape(candidate, ops.shape(x)), running)

    def body(k, x_best, best, candidate, running):
        return (k + 1, *step(k + 1, model_fn(candidate), candidate, x_best, best))

    # the start's answer is kept (every margin is below inf) and query 1 proposed
    x_best = ball.project(x + epsilon * ops.cast(start, x.dtype), x, epsilon, attack_norm,
                          clip_min, clip_max)
    one = ops.convert_to_tensor(1, "int32")
    state = step(one, model_fn(x_best), x_best, x_best,
                 ops.zeros_like(x_best[:, 0, 0, 0]) + float("inf"))
    _, x_best, *_ = ops.while_loop(lambda k, *state: (k < queries) & state[-1], body,
                                   (one, *state))
    return x_best


def _build(model_fn, budget, attack_norm, clip_min, clip_max, top_k):
    """Square's core (see attacks.base): the budget's queries."""

    def core(x, y, epsilon, targets, start, *draws):
        del targets
        return square(model_fn, x, y, epsilon, start, *draws, attack_norm=attack_norm,
                      queries=budget.square_queries, clip_min=clip_min, clip_max=clip_max,
                      top_k=top_k)

    return core


SQUARE = Attack("square", "the Square Attack (Andriushchenko et al. 2020)", _build, draw,
                autoattack=True, gradient_free=True, images_only=True, any_top_k=True)
"""The Square Attack, AutoAttack's gradient-free one."""
