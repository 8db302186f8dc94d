"""The four attacks of AutoAttack (Croce & Hein, ICML 2020), batched in TensorFlow.

Written from the papers, one radius per image (a (batch,) tensor `eps`), images in
[clip_min, clip_max], on a function `model_fn(images) -> logits`:

- APGD (Croce & Hein 2020, Algorithm 1): projected gradient ascent with momentum 0.75,
  step size 2 eps halved at checkpoints w_j where the loss stalled; on the
  cross-entropy ("ce"), the untargeted DLR loss ("dlr") or the targeted one.
- FAB (Croce & Hein, ICML 2020, "Minimally distorted adversarial examples with a fast
  adaptive boundary attack"), targeted: steps onto the linearised boundary with a
  target class, biased towards the original image, and a backward step after each
  success; it minimises the distance itself.
- Square (Andriushchenko et al., ECCV 2020): a gradient-free random search over square
  windows of side about sqrt(p h w), in l_inf and l2.

Every attack returns, per image, its best example: a misclassified one when it found
one, else its last candidate. Callers verify (see evaluation.judge.Judge, `within_radius`).
`make_attack` runs one by name on NumPy batches, targeted ones once per runner-up class.
"""

import dataclasses
import threading
from typing import Any, Callable, Optional

import numpy as np
import tensorflow as tf

from keras_gradreg import primitives
from keras_gradreg import validation
from keras_gradreg.metrics import misclassification_margin
from keras_gradreg.primitives import per_example
from keras_gradreg.primitives import project

MOMENTUM = 0.75
"""APGD's alpha: weight of the new step against the previous one."""
STALL_FRACTION = 0.75
"""APGD halves its step when fewer than this share of a window's steps raised the loss."""
RETIRE_SHARE = 1 / 8
"""APGD drops the images it fooled from its batch once they are this share of it. 1/8:
APGD-CE's l_inf radius search on 384 digits of the main job's undefended and PGD-AT
models 37 % and 21 % faster than never dropping; 1/4 about as fast on the first, slower
on the second; 1/2 slower on both (one process, order alternated, seed 0; undefended: two
runs each, PGD-AT: the run that was not the process's first)."""
FAB_ALPHA_MAX, FAB_ETA, FAB_BETA = 0.1, 1.05, 0.9
"""FAB's largest bias to the original image, overshoot and backward step (the paper's)."""
SQUARE_P_INIT = 0.8
"""Square's initial share of the image a window covers (AutoAttack's value, l_inf and l2)."""
ROUNDING = 1e-5
"""Relative slack when checking that an example lies within its radius: float32 images
and norms computed in float32 (a projection onto the l2 ball) round by about this."""


@dataclasses.dataclass(frozen=True)
class AutoAttackBudget:
    """Budgets of AutoAttack's attacks; the defaults are its "standard" version.

    Attributes:
      apgd_steps: iterations of each APGD run.
      target_classes: runner-up classes APGD-T and FAB-T aim at, each in its own run.
      fab_steps: iterations of each FAB run.
      square_queries: model queries of Square per image.
    """

    apgd_steps: int = 100
    target_classes: int = 9
    fab_steps: int = 100
    square_queries: int = 5000

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = validation.check_number(f"AutoAttackBudget {field.name}",
                                            getattr(self, field.name), low=1, low_open=False,
                                            integer=True)
            object.__setattr__(self, field.name, value)


STANDARD_BUDGET = AutoAttackBudget()
SEARCH_BUDGET = AutoAttackBudget(apgd_steps=20, fab_steps=20, square_queries=1000)
"""The budgets inside evaluate_robustness's radius search (about 13 radii per image):
measured on the main job's three models at about the cost of FGM + PGD + MIM with 20
steps, and stronger on each (see the README)."""
BUDGETS = {"standard": STANDARD_BUDGET, "quick": SEARCH_BUDGET}
"""Named budgets for the scripts' --autoattack_budget: "standard" is AutoAttack's (what
to report); "quick" is SEARCH_BUDGET, for a first look at a model or for tests."""


def dlr_loss(logits: tf.Tensor, y: tf.Tensor, targets: Optional[tf.Tensor] = None) -> tf.Tensor:
    """The Difference of Logits Ratio loss, per example (higher: closer to misclassified).

    Untargeted: -(z_y - max_{i != y} z_i) / (z_(1) - z_(3)); targeted at class t:
    -(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2), z_(k) the k-th largest logit. Both are
    unchanged when the logits are shifted or multiplied by a positive number, so a
    saturated softmax does not hide the gradient.

    Args:
      logits: (batch, classes), at least 3 classes (4 when targeted).
      y: integer labels (batch,).
      targets: integer target classes (batch,), or None for the untargeted loss.

    Returns:
      The loss, (batch,).
    """
    logits = tf.cast(logits, tf.float32)
    ranked = tf.sort(logits, axis=-1, direction="DESCENDING")
    if targets is None:
        return (misclassification_margin(logits, y, margin="logit")
                / (ranked[:, 0] - ranked[:, 2] + 1e-12))
    gap = tf.gather(logits, targets, batch_dims=1) - tf.gather(logits, y, batch_dims=1)
    spread = ranked[:, 0] - (ranked[:, 2] + ranked[:, 3]) / 2
    return gap / (spread + 1e-12)


def _loss_fn(loss: str, targeted: bool) -> Callable:
    """f(logits, y, targets) -> the loss per example (targets ignored when untargeted)."""
    if loss == "ce":
        return lambda logits, y, targets: tf.nn.sparse_softmax_cross_entropy_with_logits(
            y, tf.cast(logits, tf.float32))
    return lambda logits, y, targets: dlr_loss(logits, y, targets if targeted else None)


def checkpoints(steps: int) -> np.ndarray:
    """APGD's window lengths: entry k > 0 when iteration k ends a window of that length.

    The windows are 0.22 of the steps, then each 0.03 shorter, at least 0.06 (Croce &
    Hein 2020, Sec. 3.1).
    """
    window = np.zeros(steps, np.int32)
    length, shrink, shortest = (max(int(f * steps), 1) for f in (0.22, 0.03, 0.06))
    end = length - 1
    while end < steps:
        window[end] = length
        length = max(length - shrink, shortest)
        end += length
    return window


def apgd(model_fn: Callable, x: tf.Tensor, y: tf.Tensor, eps: tf.Tensor, *, attack_norm: str,
         loss: str, steps: int, clip_min: float, clip_max: float,
         targets: Optional[tf.Tensor] = None, seed: int = 0) -> tf.Tensor:
    """APGD from a random point on the eps-sphere (Croce & Hein 2020, Algorithm 1).

    Args:
      model_fn: images -> logits.
      x, y: images and integer labels; eps: (batch,) radii.
      attack_norm: "linf" or "l2".
      loss: "ce" or "dlr" (targeted when `targets` are given).
      steps: iterations.
      clip_min, clip_max: the data range.
      targets: target classes (batch,) for the targeted DLR loss.
      seed: seeds the random start.

    Returns:
      Per image, a misclassified example within eps if one was met (the first one), else
      the point of highest loss.

    An image is done once misclassified, so the batch sheds the fooled images whenever
    they are RETIRE_SHARE of it (in the main job's l_inf radius search on its undefended
    and PGD-AT models, 47 % and 42 % of APGD-CE's image-steps were on images already
    fooled); the others run on as before. The batch
    size changes inside the loop: this cannot run inside an XLA-compiled function.
    """
    window = tf.constant(checkpoints(steps))
    loss_of = _loss_fn(loss, targets is not None)

    def loss_and_grad(images, y, targets):
        with tf.GradientTape() as tape:
            tape.watch(images)
            logits = model_fn(images)
            values = loss_of(logits, y, targets)
        fooled = tf.not_equal(tf.argmax(logits, axis=-1, output_type=y.dtype), y)
        return values, tape.gradient(values, images), fooled

    if attack_norm == "linf":
        start = tf.random.stateless_uniform(tf.shape(x), [seed, 0], -1.0, 1.0)
    else:
        start = tf.random.stateless_normal(tf.shape(x), [seed, 0])
    radius = per_example(eps, x)
    targets = y if targets is None else targets
    x_adv = project(x + radius * start / per_example(primitives.norm(start, attack_norm), x), x,
                    radius, attack_norm, clip_min, clip_max)
    values, grad, fooled = loss_and_grad(x_adv, y, targets)
    # every entry is per image: the images still running (see `retire`)
    state = dict(
        index=tf.range(tf.shape(x)[0]), x=x, y=y, targets=targets, radius=radius,
        x_adv=x_adv, x_prev=x_adv, grad=grad, loss=values,
        x_best=x_adv, grad_best=grad, loss_best=values,
        x_found=x_adv, fooled=fooled,
        step=2.0 * radius, rises=tf.zeros_like(values),
        loss_best_at_check=values, halved_at_check=tf.ones_like(values, tf.bool),
    )

    def retire(finished, s):
        """The fooled images leave the batch: their example, the first misclassified point
        met, is final, and every other image's run is per image, so the same."""
        gone = s["fooled"]
        finished = tf.tensor_scatter_nd_update(finished, tf.boolean_mask(s["index"], gone)[:, None],
                                               tf.boolean_mask(s["x_found"], gone))
        kept = tf.where(~gone)[:, 0]
        return finished, tf.nest.map_structure(lambda v: tf.gather(v, kept), s)

    def body(k, finished, s):
        x, radius = s["x"], s["radius"]
        momentum = tf.where(k > 0, MOMENTUM, 1.0)
        z = project(s["x_adv"] + s["step"] * primitives.ascent_direction(s["grad"], attack_norm),
                    x, radius, attack_norm, clip_min, clip_max)
        moved = (s["x_adv"] + momentum * (z - s["x_adv"])
                 + (1 - momentum) * (s["x_adv"] - s["x_prev"]))
        x_new = project(moved, x, radius, attack_norm, clip_min, clip_max)
        values, grad, fooled = loss_and_grad(x_new, s["y"], s["targets"])
        better = values > s["loss_best"]
        wide = per_example(better, x)
        s = dict(s, x_prev=s["x_adv"], x_adv=x_new, grad=grad, loss=values,
                 x_found=tf.where(per_example(fooled & ~s["fooled"], x), x_new, s["x_found"]),
                 fooled=s["fooled"] | fooled,
                 x_best=tf.where(wide, x_new, s["x_best"]),
                 grad_best=tf.where(wide, grad, s["grad_best"]),
                 loss_best=tf.where(better, values, s["loss_best"]),
                 rises=s["rises"] + tf.cast(values > s["loss"], values.dtype))
        length = tf.cast(window[k], values.dtype)

        def check(s):
            # halve the step where the window saw few rises, or where the best loss did
            # not move and the step was not halved at the last checkpoint
            stalled = s["rises"] < STALL_FRACTION * length
            stuck = ~s["halved_at_check"] & (s["loss_best_at_check"] >= s["loss_best"])
            halve = stalled | stuck
            wide = per_example(halve, x)
            return dict(s, step=tf.where(wide, s["step"] / 2, s["step"]),
                        x_adv=tf.where(wide, s["x_best"], s["x_adv"]),
                        grad=tf.where(wide, s["grad_best"], s["grad"]),
                        rises=tf.zeros_like(s["rises"]), halved_at_check=halve,
                        loss_best_at_check=s["loss_best"])

        s = tf.cond(length > 0, lambda: check(s), lambda: s)
        many = tf.reduce_mean(tf.cast(s["fooled"], tf.float32)) >= RETIRE_SHARE
        finished, s = tf.cond(many, lambda: retire(finished, s), lambda: (finished, s))
        return k + 1, finished, s

    running = tf.nest.map_structure(lambda v: tf.TensorShape([None]).concatenate(v.shape[1:]),
                                    state)
    _, finished, s = tf.while_loop(
        lambda k, finished, s: (k < steps) & (tf.size(s["index"]) > 0), body,
        (tf.constant(0), tf.zeros_like(x), state),
        shape_invariants=(tf.TensorShape([]), x.shape, running))
    last = tf.where(per_example(s["fooled"], s["x"]), s["x_found"], s["x_best"])
    return tf.tensor_scatter_nd_update(finished, s["index"][:, None], last)


def _boundary_step(w: tf.Tensor, c: tf.Tensor, lower: tf.Tensor, upper: tf.Tensor,
                   attack_norm: str, iterations: int = 30) -> tf.Tensor:
    """The smallest d (in attack_norm) with w.d >= c and lower <= d <= upper, per row.

    The best d moves coordinate i by sign(w_i) min(t, r_i) (l_inf) or sign(w_i)
    min(t |w_i|, r_i) (l2: the KKT point), with r_i >= 0 how far the box lets it go;
    w.d grows with t, which is found by bisection. Where no point of the box reaches
    c, the farthest one is returned; where c <= 0, zero.

    Args:
      w: (batch, dims) normals; c: (batch,) levels.
      lower, upper: (batch, dims) box, lower <= 0 <= upper.
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
    ops over the batch, 45 % of a FAB step on the small CNN as separate TensorFlow ops;
    fused, the main job's FAB-T search ran 1.37x faster (2 CPU cores; the distances
    agreed to 1e-4). XLA compiles it once per batch size, so FAB's batches are padded
    (FAB_BATCH_MULTIPLE). The kernel's output has no static shape: w's is restored."""
    return tf.ensure_shape(_xla_boundary_step(w, c, lower, upper, attack_norm), w.shape)


FAB_BATCH_MULTIPLE = 32
"""FAB's batches are padded to a multiple of this (by repeating the last image: FAB is
deterministic and treats each image on its own), so XLA compiles a few batch sizes."""


def fab(model_fn: Callable, x: tf.Tensor, y: tf.Tensor, *, targets: tf.Tensor, attack_norm: str,
        steps: int, clip_min: float, clip_max: float) -> tf.Tensor:
    """Targeted FAB from the image itself (Croce & Hein, ICML 2020, Sec. 3).

    Each step linearises z_t - z_y at the iterate, projects the iterate and the original
    image onto its zero set (inside the data range), and moves to a convex combination
    of the two projections (weight on the original's at most FAB_ALPHA_MAX, both
    overshot by FAB_ETA); a misclassified iterate is recorded if closer than the best
    so far and pulled back towards the image by FAB_BETA.

    Args:
      model_fn: images -> logits.
      x, y: images and integer labels.
      targets: (batch,) target classes.
      attack_norm: "linf" or "l2".
      steps: iterations.
      clip_min, clip_max: the data range.

    Returns:
      The closest misclassified point met per image, or x where none.
    """
    shape = tf.shape(x)
    flat_x = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])  # keeps a static batch size

    def gap_and_grad(images):
        with tf.GradientTape() as tape:
            tape.watch(images)
            logits = tf.cast(model_fn(images), tf.float32)
            gap = (tf.gather(logits, targets, batch_dims=1)
                   - tf.gather(logits, y, batch_dims=1))
        return gap, tf.reshape(tape.gradient(gap, images), tf.shape(flat_x))

    def misclassified(images):
        return tf.not_equal(tf.argmax(model_fn(images), axis=-1, output_type=y.dtype), y)

    def distance(flat):
        return primitives.norm(flat - flat_x, attack_norm)

    def body(k, current, best, best_distance):
        gap, grad = gap_and_grad(tf.reshape(current, shape))
        from_current = _fused_boundary_step(grad, -gap, clip_min - current, clip_max - current,
                                            attack_norm)
        level = -gap - tf.reduce_sum(grad * (flat_x - current), axis=1)
        from_image = _fused_boundary_step(grad, level, clip_min - flat_x, clip_max - flat_x,
                                          attack_norm)
        a, b = primitives.norm(from_current, attack_norm), primitives.norm(from_image, attack_norm)
        alpha = tf.clip_by_value(tf.math.divide_no_nan(a, a + b), 0.0, FAB_ALPHA_MAX)[:, None]
        current = tf.clip_by_value((1 - alpha) * (current + FAB_ETA * from_current)
                                   + alpha * (flat_x + FAB_ETA * from_image), clip_min, clip_max)
        fooled = misclassified(tf.reshape(current, shape))
        closer = fooled & (distance(current) < best_distance)
        best = tf.where(closer[:, None], current, best)
        best_distance = tf.where(closer, distance(current), best_distance)
        current = tf.where(fooled[:, None], flat_x + FAB_BETA * (current - flat_x), current)
        return (k + 1, tf.ensure_shape(current, flat_x.shape), tf.ensure_shape(best, flat_x.shape),
                tf.ensure_shape(best_distance, flat_x.shape[:1]))

    start = (tf.constant(0), flat_x, flat_x, tf.zeros_like(flat_x[:, 0]) + np.inf)
    _, _, best, _ = tf.while_loop(lambda k, *_: k < steps, body, start)
    return tf.reshape(best, shape)


def _square_share(query: tf.Tensor, queries: int) -> tf.Tensor:
    """Square's p at a query: SQUARE_P_INIT halved at 10, 50, 200, ... of 10,000."""
    progress = tf.cast(query, tf.float32) / queries * 10000
    halvings = tf.reduce_sum(tf.cast(
        progress > tf.constant([10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000], tf.float32),
        tf.float32))
    return SQUARE_P_INIT / 2.0 ** halvings


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
           queries: int, clip_min: float, clip_max: float, seed: int = 0) -> tf.Tensor:
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
      clip_min, clip_max: the data range.
      seed: seeds the random search.

    Returns:
      Per image, the point of smallest margin found.

    Between two model calls one XLA kernel (`answer_and_propose`) keeps the last answer
    where it lowered the margin and builds the next candidate; the random draws stay
    TensorFlow ops, made as before (0.6.3 moved the margin and the choice into the kernel,
    which held the candidate alone: the same examples in l_inf and l2). In l_inf the
    examples are those of separate ops; in l2 XLA rounds the norms differently (1e-6 after
    two queries), and the search then takes other paths: the same share of images broken
    at each of three seeds (within one image of 256; PGD-AT model, 1,000 queries).
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
        value = -misclassification_margin(logits, y, margin="logit")
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


CASCADE_ATTACKS = {
    "apgd_ce": ("l2", "linf"),
    "apgd_dlr": ("l2", "linf"),
    "apgd_t": ("l2", "linf"),
    "fab_t": ("l2", "linf"),
    "square": ("l2", "linf"),
}
"""AutoAttack's attacks (and untargeted APGD-DLR) and the norms each supports."""
STANDARD = ("apgd_ce", "apgd_t", "fab_t", "square")
"""AutoAttack's "standard" version, in the order of its cascade."""
MIN_CLASSES = {"apgd_dlr": 3, "apgd_t": 4}
"""The DLR losses divide by z_(1) - z_(3) (targeted: by z_(1) - (z_(3) + z_(4)) / 2)."""


def perturbation_norm(x_adv: np.ndarray, x: np.ndarray, attack_norm: str) -> np.ndarray:
    """||x_adv - x|| per image, in float64."""
    diff = (np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)).reshape(len(x), -1)
    return np.linalg.norm(diff, ord=np.inf if attack_norm == "linf" else 2, axis=1)


def within_radius(size: np.ndarray, eps: np.ndarray, attack_norm: str, x: np.ndarray,
                  clip_min: float, clip_max: float) -> np.ndarray:
    """size <= eps up to the rounding of float32 images: ROUNDING relative, plus one
    float32 spacing of the data range per entry (in l2, sqrt(entries) of them)."""
    entries = 1 if attack_norm == "linf" else int(np.prod(np.shape(x)[1:]))
    spacing = np.spacing(np.float32(max(abs(clip_min), abs(clip_max))))
    return size <= np.asarray(eps, np.float64) * (1 + ROUNDING) + float(spacing) * np.sqrt(entries)


def check_classes(name: str, num_classes: int) -> None:
    """A ValueError if attack `name` cannot run on a model with that many classes."""
    needed = MIN_CLASSES.get(name, 2)
    if num_classes < needed:
        raise ValueError(f"Attack {name!r} needs at least {needed} classes (its DLR loss ranks "
                         f"the logits); the model has {num_classes}.")


def runner_up_classes(logits: np.ndarray, y: np.ndarray, count: int) -> np.ndarray:
    """The `count` highest-scoring classes other than the label, best first, (batch, count)."""
    scores = np.array(logits, np.float64)
    scores[np.arange(len(y)), y] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :count]


_NEW_GRAPH = threading.Lock()
"""Held while an attack's graph is chosen and, when new, traced (not run): batches attacked
at the same time (evaluation.progress.WORKERS) trace each graph once, one at a time."""


def traced_per_image_shape(fn: Callable, *extra: tf.TensorSpec,
                           cache: Optional[dict] = None, key: Any = None) -> Callable:
    """fn(x, y, eps, *extra) as a tf.function traced at most twice per image shape: x
    float32 (batch, ...), y int64 (batch,), eps float32 (batch,) radii, then the `extra`
    arguments. The first batch size met gets a graph of its own (a graph for a known
    batch size ran 10 % faster: APGD and Square, small CNN, 2 CPU cores), every other
    size shares one graph for any size, so the shrinking batches of a radius search or a
    cascade do not trace again.

    Args:
      fn: the function to compile.
      *extra: the specs of its arguments after eps.
      cache: where the graphs live, under `key` (everything fn's graph depends on): a
        dict that lasts as long as the model, so that every evaluation of it reuses
        them (see evaluation.compiled_for); None: this function's own.
      key: fn's key in `cache`.
    """
    traced = {} if cache is None else cache.setdefault(key, {})

    def call(x, y, eps, *args):
        with _NEW_GRAPH:
            graphs = traced.setdefault(tuple(x.shape[1:]), {})
            batch = len(x) if not graphs or len(x) in graphs else None
            if batch not in graphs:
                graph = tf.function(fn, input_signature=[
                    tf.TensorSpec((batch,) + tuple(x.shape[1:]), tf.float32),
                    tf.TensorSpec((batch,), tf.int64), tf.TensorSpec((batch,), tf.float32),
                    *extra])
                # TensorFlow counts traces per Python function across all models, and an
                # attack called a few times a model (Square in the checks, the cascade's
                # later stages) traces on most calls with every new model: a false alarm
                # here, where each graph traces once (see backend.PRIVATE_KERAS_APIS)
                graph._omit_frequent_tracing_warning = True
                graph.get_concrete_function()  # traced here, under the lock
                graphs[batch] = graph
            graph = graphs[batch]
        return graph(x, y, eps, *args)

    return call


def _padded(idx: np.ndarray, multiple: int) -> np.ndarray:
    """idx with its last entry repeated up to a multiple of `multiple` entries."""
    return np.concatenate([idx, np.repeat(idx[-1:], -len(idx) % multiple)])


def make_attack(name: str, model_fn: Callable, attack_norm: str, budget: AutoAttackBudget,
                clip_min: float, clip_max: float, seed: int = 0,
                cache: Optional[dict] = None) -> Callable:
    """Attack `name` as f(x, y, eps) -> x_adv on NumPy batches, eps one radius per image.

    APGD-T and FAB-T run once per runner-up class, each run only on the images not yet
    broken within eps (with eps = inf, FAB-T runs every target on every image and keeps
    each image's closest example). The graph is traced at most twice per image shape
    (see `traced_per_image_shape`). FAB-T, which neither depends on eps nor draws at
    random, remembers each image's runs: a later call on the same image (a larger radius
    of the cascade) runs only the target classes not run yet, and breaks within its
    radius exactly the images a fresh attack would (returning the closest example found
    over the targets run). `cache`: see `traced_per_image_shape`.
    """
    common = dict(clip_min=clip_min, clip_max=clip_max)
    graph = {
        "apgd_ce": lambda x, y, eps, t, seed: apgd(
            model_fn, x, y, eps, attack_norm=attack_norm, loss="ce", steps=budget.apgd_steps,
            seed=seed, **common),
        "apgd_dlr": lambda x, y, eps, t, seed: apgd(
            model_fn, x, y, eps, attack_norm=attack_norm, loss="dlr", steps=budget.apgd_steps,
            seed=seed, **common),
        "apgd_t": lambda x, y, eps, t, seed: apgd(
            model_fn, x, y, eps, attack_norm=attack_norm, loss="dlr", targets=t,
            steps=budget.apgd_steps, seed=seed, **common),
        "fab_t": lambda x, y, eps, t, seed: fab(
            model_fn, x, y, targets=t, attack_norm=attack_norm, steps=budget.fab_steps, **common),
        "square": lambda x, y, eps, t, seed: square(
            model_fn, x, y, eps, attack_norm=attack_norm, queries=budget.square_queries,
            seed=seed, **common),
    }[name]
    run = traced_per_image_shape(graph, tf.TensorSpec((None,), tf.int64),  # targets
                                 tf.TensorSpec((), tf.int32),  # seed
                                 cache=cache, key=(name, model_fn, attack_norm, budget, clip_min,
                                                   clip_max))
    remembered = {}  # FAB-T: image and label bytes -> (targets run, closest example, its size)
    targeted = name in ("apgd_t", "fab_t")

    def attack(x, y, eps):
        x, y = np.asarray(x, np.float32), np.asarray(y, np.int64)
        eps = np.asarray(eps, np.float32)
        logits = np.asarray(model_fn(x))
        rounds = min(budget.target_classes, logits.shape[1] - 1) if targeted else 1
        targets = runner_up_classes(logits, y, rounds)
        best = x.copy()
        distance = np.full(len(x), np.inf)
        start = np.zeros(len(x), int)  # the first round each image still has to run
        keys = [x[i].tobytes() + y[i].tobytes() for i in range(len(x))] if name == "fab_t" else []
        for i, key in enumerate(keys):
            if key in remembered:
                start[i], best[i], distance[i] = remembered[key]
        todo = ~(np.isfinite(distance)
                 & within_radius(distance, eps, attack_norm, x, clip_min, clip_max))
        for r in range(rounds):
            idx = np.flatnonzero(todo & (start <= r))
            if not len(idx):
                continue
            padded = _padded(idx, FAB_BATCH_MULTIPLE if name == "fab_t" else 1)
            found = np.asarray(run(x[padded], y[padded], eps[padded], targets[padded, r],
                                   np.int32(seed + r)))[:len(idx)]
            wrong = np.argmax(np.asarray(model_fn(found)), axis=1) != y[idx]
            size = perturbation_norm(found, x[idx], attack_norm)
            closer = (wrong & (size < distance[idx])) if name == "fab_t" else (wrong | (r == 0))
            best[idx[closer]] = found[closer]
            distance[idx[closer & wrong]] = size[closer & wrong]
            start[idx] = r + 1
            todo[idx] = ~(wrong & within_radius(size, eps[idx], attack_norm, x, clip_min, clip_max)
                          & np.isfinite(eps[idx]))
        for i, key in enumerate(keys):
            remembered[key] = (start[i], best[i], distance[i])
        return best

    return attack
