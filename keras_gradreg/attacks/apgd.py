"""APGD (Croce & Hein, ICML 2020, Algorithm 1), batched in keras.ops: APGD-CE, APGD-DLR and
the targeted APGD-T.

Projected gradient ascent with momentum 0.75 and a step of 2 epsilon halved at checkpoints
where the loss stalled, on the cross-entropy ("ce"), the untargeted DLR loss ("dlr") or
the targeted one; one radius per image (a (batch,) tensor `epsilon`), images in
[clip_min, clip_max], on a function `model_fn(images) -> logits`. The loop is the
backend's (a graph's, a jitted one's, Python's on PyTorch); the start is drawn on the host.
"""

from typing import Any, Callable, Optional

import numpy as np
from keras import ops

from keras_gradreg import backend
from keras_gradreg import per_example
from keras_gradreg.attacks import ball
from keras_gradreg.attacks import judge
from keras_gradreg.attacks import losses
from keras_gradreg.attacks.base import Attack

MOMENTUM = 0.75
"""APGD's alpha: weight of the new step against the previous one."""
STALL_FRACTION = 0.75
"""APGD halves its step when fewer than this share of a window's steps raised the loss."""


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


def draw_start(rngs: list, x: np.ndarray, budget: Any, attack_norm: str) -> tuple:
    """APGD's random start, a point on the unit sphere of the norm per image (Croce & Hein
    2020: uniform entries in l_inf, a Gaussian direction in l2), as the one draw."""
    del budget
    shape = x.shape[1:]
    directions = [rng.uniform(-1.0, 1.0, shape) if attack_norm == "linf"
                  else rng.standard_normal(shape) for rng in rngs]
    flat = np.stack(directions).reshape(len(x), -1)
    order = per_example.NORM_ORDERS[attack_norm]
    length = np.maximum(np.linalg.norm(flat, ord=order, axis=1), 1e-12)
    return ((flat / length[:, None]).reshape(x.shape).astype(np.float32),)


def _checkpoint(s: dict, length: Any) -> dict:
    """Where iteration k ends a window of `length` > 0 steps: halve the step where the
    window saw few rises, or where the best loss did not move and the step was not halved
    at the last checkpoint, and restart those images from their best point."""
    at_check = length > 0
    stalled = s["rises"] < STALL_FRACTION * length
    stuck = ops.logical_not(s["halved_at_check"]) & (s["loss_best_at_check"] >= s["loss_best"])
    halve = (stalled | stuck) & at_check
    wide = per_example.broadcast(halve, s["x_adv"])
    return dict(s, step=ops.where(wide, s["step"] / 2, s["step"]),
                x_adv=ops.where(wide, s["x_best"], s["x_adv"]),
                grad=ops.where(wide, s["grad_best"], s["grad"]),
                rises=ops.where(at_check, ops.zeros_like(s["rises"]), s["rises"]),
                halved_at_check=ops.where(at_check, halve, s["halved_at_check"]),
                loss_best_at_check=ops.where(at_check, s["loss_best"], s["loss_best_at_check"]))


def _move(k, s: dict, x, epsilon, evaluate: Callable, attack_norm: str, clip_min: float,
          clip_max: float) -> dict:
    """Step k of every image: the momentum step, its loss and gradient, and what the step
    changed of the best point and of the first misclassified one."""
    momentum = ops.cast(ops.where(k > 0, MOMENTUM, 1.0), x.dtype)  # (float64 under JAX x64)
    z = ball.project(s["x_adv"] + s["step"] * ball.ascent_direction(s["grad"], attack_norm),
                     x, epsilon, attack_norm, clip_min, clip_max)
    moved = (s["x_adv"] + momentum * (z - s["x_adv"])
             + (1 - momentum) * (s["x_adv"] - s["x_prev"]))
    x_new = ball.project(moved, x, epsilon, attack_norm, clip_min, clip_max)
    values, grad, fooled = evaluate(x_new)
    better = values > s["loss_best"]
    wide = per_example.broadcast(better, x)
    newly = per_example.broadcast(fooled & ops.logical_not(s["fooled"]), x)
    return dict(s, x_prev=s["x_adv"], x_adv=x_new, grad=grad, loss=values,
                x_found=ops.where(newly, x_new, s["x_found"]),
                fooled=s["fooled"] | fooled,
                x_best=ops.where(wide, x_new, s["x_best"]),
                grad_best=ops.where(wide, grad, s["grad_best"]),
                loss_best=ops.where(better, values, s["loss_best"]),
                rises=s["rises"] + ops.cast(values > s["loss"], values.dtype))


def apgd(model_fn: Callable, x: Any, y: Any, epsilon: Any, start: Any, *, attack_norm: str,
         loss: str, steps: int, clip_min: float, clip_max: float,
         targets: Optional[Any] = None, top_k: int = 1) -> Any:
    """APGD from a point on the epsilon-sphere (Croce & Hein 2020, Algorithm 1).

    Args:
      model_fn: images -> logits.
      x: images.
      y: their integer labels.
      epsilon: (batch,) radii.
      start: the random start on the unit sphere, shaped like x (`draw_start`).
      attack_norm: "linf" or "l2".
      loss: "ce" or "dlr" (targeted when `targets` are given).
      steps: iterations.
      clip_min: the data range's lowest value.
      clip_max: the data range's highest value.
      targets: target classes (batch,) for the targeted DLR loss.
      top_k: an image is misclassified once its label is outside the top k classes
        (judge.fooled).

    Returns:
      Per image, a misclassified example within epsilon if one was met (the first one),
      else the point of highest loss. The loop stops once every image is misclassified.
    """
    x, start = ops.convert_to_tensor(x), ops.convert_to_tensor(start)  # NumPy or tensors
    window = ops.convert_to_tensor(checkpoints(steps))
    loss_of = _loss_fn(loss, targets is not None)
    targets = y if targets is None else targets
    epsilon = per_example.broadcast(ops.cast(epsilon, x.dtype), x)

    def evaluate(images):
        def loss_at(images):
            logits = model_fn(images)
            return loss_of(logits, y, targets), logits

        values, logits, gradient = backend.value_and_gradient(loss_at, images)
        return (ops.stop_gradient(values), ops.stop_gradient(gradient),
                judge.fooled(logits, y, top_k))

    x_adv = ball.project(x + epsilon * ops.cast(start, x.dtype), x, epsilon, attack_norm,
                         clip_min, clip_max)
    values, grad, fooled = evaluate(x_adv)
    state = dict(
        x_adv=x_adv, x_prev=x_adv, grad=grad, loss=values,
        x_best=x_adv, grad_best=grad, loss_best=values, x_found=x_adv, fooled=fooled,
        step=2.0 * epsilon * ops.ones_like(per_example.broadcast(values, x), x.dtype),
        rises=ops.zeros_like(values), loss_best_at_check=values,
        halved_at_check=ops.ones_like(fooled),
    )

    def body(k, s):
        s = _move(k, s, x, epsilon, evaluate, attack_norm, clip_min, clip_max)
        return k + 1, _checkpoint(s, ops.cast(ops.take(window, k), s["loss"].dtype))

    def running(k, s):
        return (k < steps) & ops.logical_not(ops.all(s["fooled"]))

    _, s = ops.while_loop(running, body, (ops.convert_to_tensor(0, "int32"), state))
    return ops.where(per_example.broadcast(s["fooled"], x), s["x_found"], s["x_best"])


def _build(loss: str, targeted: bool) -> Callable:
    """The core of one APGD (see attacks.base): the budget's steps, the start drawn."""

    def build(model_fn, budget, attack_norm, clip_min, clip_max, top_k):
        def core(x, y, epsilon, targets, start):
            return apgd(model_fn, x, y, epsilon, start, attack_norm=attack_norm, loss=loss,
                        steps=budget.apgd_steps, clip_min=clip_min, clip_max=clip_max,
                        targets=targets if targeted else None, top_k=top_k)

        return core

    return build


APGD_CE = Attack("apgd_ce", "APGD on the cross-entropy", _build("ce", False), draw_start,
                 autoattack=True, any_top_k=True)
"""AutoAttack's first attack (Croce & Hein, ICML 2020): APGD on the cross-entropy."""
APGD_DLR = Attack("apgd_dlr", "APGD on the untargeted DLR loss", _build("dlr", False),
                  draw_start, autoattack=True, min_classes=3)
"""APGD on the untargeted difference-of-logits ratio (Croce & Hein, ICML 2020)."""
APGD_T = Attack("apgd_t", "APGD on the targeted DLR loss", _build("dlr", True), draw_start,
                autoattack=True, targeted=True, min_classes=4)
"""AutoAttack's second attack: APGD on the targeted DLR loss, one run per runner-up class."""
