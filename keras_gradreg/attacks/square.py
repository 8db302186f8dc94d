"""The Square Attack (Andriushchenko et al., ECCV 2020), untargeted and gradient-free,
batched in TensorFlow, in l_inf and l2: a random search over square windows of side
about sqrt(p h w)."""

from typing import Callable

import numpy as np
import tensorflow as tf

from keras_gradreg.attacks import losses
from keras_gradreg.attacks.ball import per_example
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


def square(model_fn: Callable, x: tf.Tensor, y: tf.Tensor, eps: tf.Tensor, *, attack_norm: str,
           queries: int, clip_min: float, clip_max: float, seed: int = 0,
           top_k: int = 1) -> tf.Tensor:
    """The Square Attack (Andriushchenko et al., ECCV 2020), untargeted, gradient-free.

    A random search on the logit margin z_y - max_{i != y} z_i: each query changes one
    random square window of side about sqrt(p h w) (p shrinking with the queries) and
    keeps the change if the margin fell; an image is left alone once misclassified.
    l_inf (Algorithm 2): start from vertical stripes of +-eps, set the window to +-eps
    (a sign per channel). l2 (Algorithm 3): start from a grid of +-bumps (see `_bump`)
    scaled to norm eps; each query empties a second random window and puts its mass,
    and whatever the budget has left, into a new bump in the first, so the perturbation
    keeps norm eps.

    Args:
      model_fn: images -> logits; x: (batch, height, width, channels) images.
      y: integer labels; eps: (batch,) radii.
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
    TensorFlow ops (1e-6 after two queries), so the search can take other paths than it
    would without the kernel: the same share of images broken at each of three seeds
    (within one image of 256; the main job's PGD-AT model, 1,000 queries).
    """
    _, height, width, channels = x.shape
    radius = per_example(eps, x)
    n = tf.shape(x)[0]
    rows, cols = tf.range(height)[None, :, None, None], tf.range(width)[None, None, :, None]

    def signs(shape, k):
        return 2.0 * tf.cast(tf.random.stateless_uniform(shape, [seed, k], 0, 2, tf.int32),
                             x.dtype) - 1.0

    def corners(k):
        return tf.random.stateless_uniform([2, n, 1, 1, 1], [seed, k], 0, 1)

    def window(side, corner):
        """A side x side window per image at the corner drawn: (mask, row in it, column)."""
        top = tf.cast(corner[0] * tf.cast(height - side + 1, tf.float32), tf.int32)
        left = tf.cast(corner[1] * tf.cast(width - side + 1, tf.float32), tf.int32)
        i, j = rows - top, cols - left
        return (i >= 0) & (i < side) & (j >= 0) & (j < side), i, j

    def side_at(k):
        side = tf.cast(tf.round(tf.sqrt(_square_share(k, queries) * height * width)), tf.int32)
        if attack_norm == "linf":
            return tf.clip_by_value(side, 1, min(height, width) - 1)
        side = tf.maximum(side, 3)
        return tf.minimum(side + 1 - side % 2, min(height, width))  # odd, at least 3

    def unit(v, mask=None):
        """v scaled to l2 norm 1 per image and channel (over the mask, if given)."""
        v = v if mask is None else tf.where(mask, v, 0.0)
        return v / tf.maximum(tf.norm(v, axis=[1, 2], keepdims=True), 1e-12)

    if attack_norm == "linf":
        start = x + radius * signs([n, 1, width, channels], -1)

        def draw(k):
            return corners(-2 * k), signs([n, 1, 1, channels], k)

        def propose(k, x, radius, x_best, corner, sign):
            mask, _, _ = window(side_at(k), corner)
            change = radius * sign
            candidate = tf.clip_by_value(tf.where(mask, x + change, x_best), clip_min, clip_max)
            same = tf.reduce_all(tf.abs(candidate - x_best) < 1e-7, axis=[1, 2, 3], keepdims=True)
            return tf.where(mask & same, x - change, candidate)  # a query must change something
    else:
        tile = max(height // 5, 1)
        tiles_h, tiles_w = height // tile, width // tile
        i, j = rows - (height - tiles_h * tile) // 2, cols - (width - tiles_w * tile) // 2
        inside = (i >= 0) & (i < tiles_h * tile) & (j >= 0) & (j < tiles_w * tile)
        flips = signs([n, tiles_h, tiles_w, 2 * channels], -1)
        by_tile = tf.image.resize(flips, [tiles_h * tile, tiles_w * tile], "nearest")
        by_tile = tf.image.pad_to_bounding_box(
            by_tile, (height - tiles_h * tile) // 2, (width - tiles_w * tile) // 2, height, width)
        pattern = _bump(i % tile, j % tile, tile, by_tile[..., channels:] > 0)
        start = x + radius * unit(tf.where(inside, pattern * by_tile[..., :channels], 0.0)
                                  ) / tf.sqrt(float(channels))

        def draw(k):
            return corners(-2 * k), corners(-2 * k - 1), signs([n, 1, 1, channels + 1], k)

        def propose(k, x, radius, x_best, corner, emptied_corner, flip):
            side = side_at(k)
            delta = x_best - x
            mask, i, j = window(side, corner)
            emptied, _, _ = window(side, emptied_corner)
            per_channel = lambda v: tf.norm(v, axis=[1, 2], keepdims=True)
            used = tf.reduce_sum(delta ** 2, axis=[1, 2, 3], keepdims=True)
            spare = tf.maximum(radius ** 2 - used, 0.0) / channels
            mass = per_channel(tf.where(mask | emptied, delta, 0.0))
            bump = tf.where(mask, _bump(i, j, side, flip[..., channels:] > 0), 0.0)
            fresh = unit(bump * flip[..., :channels] + unit(delta, mask), mask)
            new = tf.where(mask, fresh * tf.sqrt(spare + mass ** 2), tf.where(emptied, 0.0, delta))
            return x + new

    @tf.function(jit_compile=True)
    def answer_and_propose(k, logits, candidate, x_best, best, *draws):
        """Query k-1's answer kept where its margin fell, then query k's candidate,
        projected: one XLA kernel over the batch (a simplified l_inf candidate took
        1.0-1.2 ms a query on 128 digits as TensorFlow ops, 0.17-0.19 ms as XLA, beside
        1.4 ms for the small CNN's forward pass; this CPU); the model and the random
        draws stay outside it, TensorFlow's on every device."""
        value = -losses.margin(logits, y, top_k)
        better = (value < best) & (best > 0)
        x_best = tf.where(per_example(better, x), candidate, x_best)
        best = tf.where(better, value, best)
        candidate = project(propose(k, x, radius, x_best, *draws), x, radius, attack_norm,
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
    x_best = tf.ensure_shape(project(start, x, radius, attack_norm, clip_min, clip_max), x.shape)
    state = answer_and_propose(1, model_fn(x_best), x_best, x_best, tf.fill([n], np.inf),
                               *draw(1))
    _, x_best, *_ = tf.while_loop(lambda k, *state: (k < queries) & state[-1], body,
                                  (tf.constant(1), *fixed(*state)))
    return x_best
