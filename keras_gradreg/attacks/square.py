"""The Square Attack (Andriushchenko et al., ECCV 2020), untargeted and gradient-free,
batched in TensorFlow, in l_inf and l2: a random search over square windows of side
about sqrt(p h w)."""

from typing import Callable

import numpy as np
import tensorflow as tf

from keras_gradreg import per_example
from keras_gradreg.attacks import losses
from keras_gradreg.attacks.ball import project

P_INIT = 0.8
"""Square's initial share of the image a window covers (AutoAttack's value, l_inf and l2)."""


def _square_share(query: tf.Tensor, queries: int) -> tf.Tensor:
    """Square's p at a query: P_INIT halved at 10, 50, 200, ... of 10,000."""
    progress = tf.cast(query, tf.float32) / queries * 10000
    halvings = tf.reduce_sum(tf.cast(
        progress > tf.constant([10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000], tf.float32),
        tf.float32))
    return P_INIT / 2.0 ** halvings


def _bump(i: tf.Tensor, j: tf.Tensor, side: tf.Tensor, transposed: tf.Tensor) -> tf.Tensor:
    """Square-L2's pattern at window coordinates (i, j) of a side x side window.

    Each half of the window (split across rows, or across columns where `transposed`)
    holds concentric square rings around the half's centre; ring k of R weighs
    sum_{k <= m < R} 1 / (m + 1)^2, a "pseudo-Gaussian" bump. The first half is
    positive, the second negative (Andriushchenko et al. 2020, Sec. 3.2). Outside the
    window the value is meaningless (callers mask it).
    """
    i, j = tf.where(transposed, j, i), tf.where(transposed, i, j)
    half = side // 2
    first = i < half
    centre_i = tf.cast(tf.where(first, 0, half), tf.float32) + (
        tf.cast(tf.where(first, half, side - half), tf.float32) - 1) / 2
    centre_j = (tf.cast(side, tf.float32) - 1) / 2
    rings = (side - 1) // 2 + 1
    ring = tf.cast(tf.maximum(tf.abs(tf.cast(i, tf.float32) - centre_i),
                              tf.abs(tf.cast(j, tf.float32) - centre_j)), tf.int32)
    longest = max(i.shape[1] or 1, j.shape[2] or 1, i.shape[2] or 1, j.shape[1] or 1)
    below = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, longest + 2) ** 2)])  # m < k
    below = tf.constant(below, tf.float32)
    weight = tf.gather(below, rings) - tf.gather(below, tf.clip_by_value(ring, 0, rings))
    return tf.where(first, weight, -weight)


class _Search:
    """What both norms' proposals draw on: the batch's shape, the stateless random draws
    of query k (seed, k), and the square windows."""

    def __init__(self, x: tf.Tensor, seed: int, queries: int, attack_norm: str):
        _, self.height, self.width, self.channels = x.shape
        self.n = tf.shape(x)[0]
        self.dtype, self.seed, self.queries, self.attack_norm = x.dtype, seed, queries, attack_norm
        self.rows = tf.range(self.height)[None, :, None, None]
        self.cols = tf.range(self.width)[None, None, :, None]

    def signs(self, shape, k):
        """Random +-1 of that shape, query k's."""
        draw = tf.random.stateless_uniform(shape, [self.seed, k], 0, 2, tf.int32)
        return 2.0 * tf.cast(draw, self.dtype) - 1.0

    def corners(self, k):
        """A window's corner per image, as shares of the free rows and columns."""
        return tf.random.stateless_uniform([2, self.n, 1, 1, 1], [self.seed, k], 0, 1)

    def window(self, side, corner):
        """A side x side window per image at the corner drawn: (mask, row in it, column)."""
        top = tf.cast(corner[0] * tf.cast(self.height - side + 1, tf.float32), tf.int32)
        left = tf.cast(corner[1] * tf.cast(self.width - side + 1, tf.float32), tf.int32)
        i, j = self.rows - top, self.cols - left
        return (i >= 0) & (i < side) & (j >= 0) & (j < side), i, j

    def side_at(self, k):
        """The window's side at query k: about sqrt(p h w), odd and at least 3 in l2."""
        side = tf.cast(tf.round(tf.sqrt(_square_share(k, self.queries) * self.height
                                        * self.width)), tf.int32)
        if self.attack_norm == "linf":
            return tf.clip_by_value(side, 1, min(self.height, self.width) - 1)
        side = tf.maximum(side, 3)
        return tf.minimum(side + 1 - side % 2, min(self.height, self.width))


def _unit(v, mask=None):
    """v scaled to l2 norm 1 per image and channel (over the mask, if given)."""
    v = v if mask is None else tf.where(mask, v, 0.0)
    return v / tf.maximum(tf.norm(v, axis=[1, 2], keepdims=True), 1e-12)


def _linf_search(search: _Search, x, epsilon, clip_min: float, clip_max: float) -> tuple:
    """(start, draw(k), propose(k, x, epsilon, x_best, *draws)) of Square-l_inf
    (Algorithm 2): vertical stripes of +-epsilon, then a window set to +-epsilon (a sign
    per channel) per query."""
    start = x + epsilon * search.signs([search.n, 1, search.width, search.channels], -1)

    def draw(k):
        return search.corners(-2 * k), search.signs([search.n, 1, 1, search.channels], k)

    def propose(k, x, epsilon, x_best, corner, sign):
        mask, _, _ = search.window(search.side_at(k), corner)
        change = epsilon * sign
        candidate = tf.clip_by_value(tf.where(mask, x + change, x_best), clip_min, clip_max)
        same = tf.reduce_all(tf.abs(candidate - x_best) < 1e-7, axis=[1, 2, 3], keepdims=True)
        return tf.where(mask & same, x - change, candidate)  # a query must change something

    return start, draw, propose


def _l2_start(search: _Search, x, epsilon):
    """Square-l2's start: a grid of +-bumps (see `_bump`) scaled to norm epsilon."""
    height, width, channels = search.height, search.width, search.channels
    tile = max(height // 5, 1)
    tiles_h, tiles_w = height // tile, width // tile
    i = search.rows - (height - tiles_h * tile) // 2
    j = search.cols - (width - tiles_w * tile) // 2
    inside = (i >= 0) & (i < tiles_h * tile) & (j >= 0) & (j < tiles_w * tile)
    flips = search.signs([search.n, tiles_h, tiles_w, 2 * channels], -1)
    by_tile = tf.image.resize(flips, [tiles_h * tile, tiles_w * tile], "nearest")
    by_tile = tf.image.pad_to_bounding_box(
        by_tile, (height - tiles_h * tile) // 2, (width - tiles_w * tile) // 2, height, width)
    pattern = _bump(i % tile, j % tile, tile, by_tile[..., channels:] > 0)
    return x + epsilon * _unit(tf.where(inside, pattern * by_tile[..., :channels], 0.0)
                               ) / tf.sqrt(float(channels))


def _l2_search(search: _Search, x, epsilon, clip_min: float, clip_max: float) -> tuple:
    """(start, draw(k), propose(k, x, epsilon, x_best, *draws)) of Square-l2
    (Algorithm 3): each query empties a second random window and puts its mass, and
    whatever the budget has left, into a new bump in the first, keeping norm epsilon."""
    del clip_min, clip_max  # the projection clips
    channels = search.channels

    def draw(k):
        return (search.corners(-2 * k), search.corners(-2 * k - 1),
                search.signs([search.n, 1, 1, channels + 1], k))

    def propose(k, x, epsilon, x_best, corner, emptied_corner, flip):
        side = search.side_at(k)
        delta = x_best - x
        mask, i, j = search.window(side, corner)
        emptied, _, _ = search.window(side, emptied_corner)
        used = tf.reduce_sum(delta ** 2, axis=[1, 2, 3], keepdims=True)
        spare = tf.maximum(epsilon ** 2 - used, 0.0) / channels
        mass = tf.norm(tf.where(mask | emptied, delta, 0.0), axis=[1, 2], keepdims=True)
        bump = tf.where(mask, _bump(i, j, side, flip[..., channels:] > 0), 0.0)
        fresh = _unit(bump * flip[..., :channels] + _unit(delta, mask), mask)
        new = tf.where(mask, fresh * tf.sqrt(spare + mass ** 2), tf.where(emptied, 0.0, delta))
        return x + new

    return _l2_start(search, x, epsilon), draw, propose


def square(model_fn: Callable, x: tf.Tensor, y: tf.Tensor, epsilon: tf.Tensor, *,
           attack_norm: str, queries: int, clip_min: float, clip_max: float, seed: int = 0,
           top_k: int = 1) -> tf.Tensor:
    """The Square Attack (Andriushchenko et al., ECCV 2020), untargeted, gradient-free.

    A random search on the logit margin z_y - max_{i != y} z_i: each query changes one
    random square window of side about sqrt(p h w) (p shrinking with the queries) and
    keeps the change if the margin fell; an image is left alone once misclassified
    (`_linf_search`, `_l2_search`).

    Args:
      model_fn: images -> logits.
      x: (batch, height, width, channels) images.
      y: integer labels.
      epsilon: (batch,) radii.
      attack_norm: "linf" or "l2".
      queries: model queries per image, the start included.
      clip_min: the data range's lowest value.
      clip_max: the data range's highest value.
      seed: seeds the random search.
      top_k: misclassified means the label outside the top k classes: the margin is
        losses.margin's with top_k.

    Returns:
      Per image, the point of smallest margin found.

    Between two model calls one XLA kernel (`answer_and_propose`) keeps the last answer
    where it lowered the margin and builds the next candidate; the random draws stay
    TensorFlow ops outside it (XLA's random numbers differ from TensorFlow's), each with
    the stateless seed (seed, query). In l2 XLA rounds the norms differently from separate
    TensorFlow ops, so the search can take other paths than it would without the kernel.
    """
    epsilon = per_example.broadcast(epsilon, x)
    search = _Search(x, seed, queries, attack_norm)
    proposals = _linf_search if attack_norm == "linf" else _l2_search
    start, draw, propose = proposals(search, x, epsilon, clip_min, clip_max)

    @tf.function(jit_compile=True)
    def answer_and_propose(k, logits, candidate, x_best, best, *draws):
        """Query k-1's answer kept where its margin fell, then query k's candidate,
        projected: one XLA kernel over the batch (docs/cost.md); the model and the random
        draws stay outside it, TensorFlow's on every device."""
        value = -losses.margin(logits, y, top_k)
        better = (value < best) & (best > 0)
        x_best = tf.where(per_example.broadcast(better, x), candidate, x_best)
        best = tf.where(better, value, best)
        candidate = project(propose(k, x, epsilon, x_best, *draws), x, epsilon, attack_norm,
                            clip_min, clip_max)
        return x_best, best, candidate, tf.reduce_any(best > 0)

    def fixed(x_best, best, candidate, running):
        """The kernel's outputs with their static shapes back."""
        return (tf.ensure_shape(x_best, x.shape), tf.ensure_shape(best, x.shape[:1]),
                tf.ensure_shape(candidate, x.shape), running)

    def body(k, x_best, best, candidate, running):
        return (k + 1, *fixed(*answer_and_propose(k + 1, model_fn(candidate), candidate, x_best,
                                                   best, *draw(k + 1))))

    # the start's answer is kept (every margin is below inf) and query 1 proposed
    x_best = tf.ensure_shape(project(start, x, epsilon, attack_norm, clip_min, clip_max), x.shape)
    state = answer_and_propose(1, model_fn(x_best), x_best, x_best, tf.fill([search.n], np.inf),
                               *draw(1))
    _, x_best, *_ = tf.while_loop(lambda k, *state: (k < queries) & state[-1], body,
                                  (tf.constant(1), *fixed(*state)))
    return x_best
