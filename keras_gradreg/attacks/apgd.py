"""APGD (Croce & Hein, ICML 2020, Algorithm 1), batched in TensorFlow.

Projected gradient ascent with momentum 0.75 and a step of 2 epsilon halved at checkpoints
where the loss stalled, on the cross-entropy ("ce"), the untargeted DLR loss ("dlr") or
the targeted one; one radius per image (a (batch,) tensor `epsilon`), images in
[clip_min, clip_max], on a function `model_fn(images) -> logits`.
"""

from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from keras_gradreg import backend
from keras_gradreg import per_example
from keras_gradreg.attacks import ball
from keras_gradreg.attacks import judge
from keras_gradreg.attacks import losses
from keras_gradreg.attacks.ball import project

MOMENTUM = 0.75
"""APGD's alpha: weight of the new step against the previous one."""
STALL_FRACTION = 0.75
"""APGD halves its step when fewer than this share of a window's steps raised the loss."""
RETIRE_SHARE = 1 / 8
"""APGD drops the images it fooled from its batch once they are this share of it: of
1/8, 1/4 and 1/2, 1/8 was the fastest measured (docs/cost.md)."""


def _loss_fn(loss: str, targeted: bool) -> Callable:
    """f(logits, y, targets) -> the loss per example (targets ignored when untargeted)."""
    if loss == "ce":
        return lambda logits, y, targets: losses.cross_entropy(logits, y)
    return lambda logits, y, targets: losses.dlr_loss(logits, y, targets if targeted else None)


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


def _retire(finished, s):
    """The fooled images leave the batch: their example, the first misclassified point
    met, is final (written into `finished`), and every other image's run is per image,
    so the same."""
    gone = s["fooled"]
    finished = tf.tensor_scatter_nd_update(finished, tf.boolean_mask(s["index"], gone)[:, None],
                                           tf.boolean_mask(s["x_found"], gone))
    kept = tf.where(~gone)[:, 0]
    return finished, tf.nest.map_structure(lambda v: tf.gather(v, kept), s)


def _checkpoint(s, length):
    """At a checkpoint ending a window of `length` steps: halve the step where the window
    saw few rises, or where the best loss did not move and the step was not halved at the
    last checkpoint, and restart those images from their best point."""
    stalled = s["rises"] < STALL_FRACTION * length
    stuck = ~s["halved_at_check"] & (s["loss_best_at_check"] >= s["loss_best"])
    halve = stalled | stuck
    wide = per_example.broadcast(halve, s["x"])
    return dict(s, step=tf.where(wide, s["step"] / 2, s["step"]),
                x_adv=tf.where(wide, s["x_best"], s["x_adv"]),
                grad=tf.where(wide, s["grad_best"], s["grad"]),
                rises=tf.zeros_like(s["rises"]), halved_at_check=halve,
                loss_best_at_check=s["loss_best"])


def _move(k, s, loss_and_grad, attack_norm: str, clip_min: float, clip_max: float):
    """Step k of every running image: the momentum step, its loss and gradient, and what
    the step changed of the best point and the first misclassified one."""
    x, epsilon = s["x"], s["epsilon"]
    momentum = tf.where(k > 0, MOMENTUM, 1.0)
    z = project(s["x_adv"] + s["step"] * ball.ascent_direction(s["grad"], attack_norm),
                x, epsilon, attack_norm, clip_min, clip_max)
    moved = (s["x_adv"] + momentum * (z - s["x_adv"])
             + (1 - momentum) * (s["x_adv"] - s["x_prev"]))
    x_new = project(moved, x, epsilon, attack_norm, clip_min, clip_max)
    values, grad, fooled = loss_and_grad(x_new, s["y"], s["targets"])
    better = values > s["loss_best"]
    wide = per_example.broadcast(better, x)
    newly = per_example.broadcast(fooled & ~s["fooled"], x)
    return dict(s, x_prev=s["x_adv"], x_adv=x_new, grad=grad, loss=values,
                x_found=tf.where(newly, x_new, s["x_found"]),
                fooled=s["fooled"] | fooled,
                x_best=tf.where(wide, x_new, s["x_best"]),
                grad_best=tf.where(wide, grad, s["grad_best"]),
                loss_best=tf.where(better, values, s["loss_best"]),
                rises=s["rises"] + tf.cast(values > s["loss"], values.dtype))


def apgd(model_fn: Callable, x: tf.Tensor, y: tf.Tensor, epsilon: tf.Tensor, *,
         attack_norm: str, loss: str, steps: int, clip_min: float, clip_max: float,
         targets: Optional[tf.Tensor] = None, seed: int = 0, top_k: int = 1) -> tf.Tensor:
    """APGD from a random point on the epsilon-sphere (Croce & Hein 2020, Algorithm 1).

    Args:
      model_fn: images -> logits.
      x: images.
      y: their integer labels.
      epsilon: (batch,) radii.
      attack_norm: "linf" or "l2".
      loss: "ce" or "dlr" (targeted when `targets` are given).
      steps: iterations.
      clip_min: the data range's lowest value.
      clip_max: the data range's highest value.
      targets: target classes (batch,) for the targeted DLR loss.
      seed: seeds the random start, drawn with the stateless seed (seed, 0).
      top_k: an image is misclassified once its label is outside the top k classes
        (judge.fooled).

    Returns:
      Per image, a misclassified example within epsilon if one was met (the first one),
      else the point of highest loss.

    An image is done once misclassified, so the batch sheds the fooled images whenever
    they are RETIRE_SHARE of it (`_retire`); the others run on as before. The batch
    size changes inside the loop: this cannot run inside an XLA-compiled function.
    """
    window = tf.constant(checkpoints(steps))
    loss_of = _loss_fn(loss, targets is not None)

    def loss_and_grad(images, y, targets):
        def loss_at(images):
            logits = model_fn(images)
            return loss_of(logits, y, targets), logits

        values, logits, gradient = backend.value_and_gradient(loss_at, images)
        return values, gradient, judge.fooled(logits, y, top_k)

    epsilon = per_example.broadcast(epsilon, x)
    targets = y if targets is None else targets
    start = ball.on_sphere(tf.shape(x), epsilon, attack_norm, [seed, 0], x.dtype)
    x_adv = project(x + start, x, epsilon, attack_norm, clip_min, clip_max)
    values, grad, fooled = loss_and_grad(x_adv, y, targets)
    # every entry is per image: the images still running (see `_retire`)
    state = dict(
        index=tf.range(tf.shape(x)[0]), x=x, y=y, targets=targets, epsilon=epsilon,
        x_adv=x_adv, x_prev=x_adv, grad=grad, loss=values,
        x_best=x_adv, grad_best=grad, loss_best=values,
        x_found=x_adv, fooled=fooled,
        step=2.0 * epsilon, rises=tf.zeros_like(values),
        loss_best_at_check=values, halved_at_check=tf.ones_like(values, tf.bool),
    )

    def body(k, finished, s):
        s = _move(k, s, loss_and_grad, attack_norm, clip_min, clip_max)
        length = tf.cast(window[k], s["loss"].dtype)
        s = tf.cond(length > 0, lambda: _checkpoint(s, length), lambda: s)
        many = tf.reduce_mean(tf.cast(s["fooled"], tf.float32)) >= RETIRE_SHARE
        finished, s = tf.cond(many, lambda: _retire(finished, s), lambda: (finished, s))
        return k + 1, finished, s

    running = tf.nest.map_structure(lambda v: tf.TensorShape([None]).concatenate(v.shape[1:]),
                                    state)
    _, finished, s = tf.while_loop(
        lambda k, finished, s: (k < steps) & (tf.size(s["index"]) > 0), body,
        (tf.constant(0), tf.zeros_like(x), state),
        shape_invariants=(tf.TensorShape([]), x.shape, running))
    last = tf.where(per_example.broadcast(s["fooled"], s["x"]), s["x_found"], s["x_best"])
    return tf.tensor_scatter_nd_update(finished, s["index"][:, None], last)
