"""Projected gradient descent (Madry et al., ICLR 2018), the one PGD of the library, on
either Keras backend: adversarial training (PGD-AT; FGSM from a random start and N-FGSM
are its one-step cases), TRADES' examples, the held-out monitor, the evaluation's
"pgd" attack and its sanity checks all call `pgd`.
"""

import dataclasses
from typing import Any, Callable, Optional

import numpy as np
from keras import ops

from keras_gradreg import backend
from keras_gradreg import per_example
from keras_gradreg.attacks import ball
from keras_gradreg.attacks import judge
from keras_gradreg.attacks import losses
from keras_gradreg.attacks.base import Attack

TRAINING_STEPS = 7
"""PGD steps per batch in the paper's adversarial-training baseline (Finlay & Oberman
2019, after Madry et al. 2018)."""
TRAINING_REACH = 1.75
"""How far PGD-AT's steps reach in all, a multiple of epsilon: the paper's baseline takes
7 steps of 2/255 at 8/255, 1.75 epsilon (`step_for_reach`)."""
MADRY_REACH = 2.5
"""Madry et al.'s reach, 2.5 epsilon (a step of 2.5 epsilon / steps): the evaluation's
PGD and the held-out monitor."""
FGSM_STEP = 1.25
"""FGSM-RS's one step, a multiple of epsilon (Wong, Rice & Kolter, ICLR 2020, Sec. 4)."""
N_FGSM_NOISE = 2.0
"""N-FGSM's random start, uniform in the ball of this multiple of epsilon (de Jorge et
al., NeurIPS 2022: k = 2 epsilon); its step is 1 epsilon and it is not projected back."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """PGD's settings as a named attack of adversarial training.

    Attributes:
      steps: gradient steps.
      step_size: each step, a multiple of epsilon (None: TRAINING_REACH / steps).
      start: the random start's radius, a multiple of epsilon.
      projected: each step is projected back onto the epsilon-ball.
    """

    steps: int
    step_size: Optional[float]
    start: float
    projected: bool


VARIANTS = {
    "pgd": Variant(TRAINING_STEPS, None, 1.0, True),
    "fgsm_rs": Variant(1, FGSM_STEP, 1.0, True),
    "n_fgsm": Variant(1, 1.0, N_FGSM_NOISE, False),
}
"""The attacks adversarial training makes its examples with: PGD (Madry et al. 2018),
FGSM from a random start (FGSM-RS, Wong et al. 2020) and N-FGSM (de Jorge et al. 2022)."""


def step_for_reach(steps: int, reach: float) -> float:
    """The step, a multiple of epsilon, of `steps` steps that reach `reach` epsilon in all."""
    return reach / steps


def input_gradient(model: Callable, x: Any, y: Any, loss_fn: Callable,
                   training: bool = False) -> Any:
    """grad_x of the per-example loss `loss_fn(y, model(x))`, shaped like x, without
    gradient, taken by the backend module (backend.value_and_gradient)."""
    def loss_at(images):
        return per_example.at_least_float32(loss_fn(y, model(images, training=training))), None

    _, _, gradient = backend.value_and_gradient(loss_at, x)
    return ops.stop_gradient(ops.cast(gradient, x.dtype))


def pgd(model: Callable, loss_fn: Callable, x: Any, y: Any, epsilon: Any, *, steps: int,
        step_size: float, seed: Any = None, attack_norm: str = "linf", clip_min: float = 0.0,
        clip_max: float = 1.0, start: float = 1.0, projected: bool = True,
        noise: Any = None) -> Any:
    """PGD from a uniform random start, in l_inf (sign steps) or l2 (normalised-gradient
    steps), ascending `loss_fn` with the model in inference mode.

    `steps=1, step_size=FGSM_STEP` is FGSM from a random start (Wong et al. 2020);
    `steps=1, step_size=1, start=N_FGSM_NOISE, projected=False` is N-FGSM (de Jorge et al.
    2022).

    Args:
      model: called as `model(x, training=False)`; a Keras model, or logits of images.
      loss_fn: (y, outputs) -> per-example loss, which the steps ascend.
      x: a batch (one input tensor).
      y: its targets (whatever loss_fn takes).
      epsilon: the radius: a number, or one per example (shape (batch,)).
      steps: gradient steps.
      step_size: each step, a multiple of epsilon (see `step_for_reach`).
      seed: a stateless seed, shape (2,), for the random start (drawn by the backend).
      attack_norm: "linf" or "l2".
      clip_min: the data range's lowest value.
      clip_max: the data range's highest value.
      start: the random start's radius, a multiple of epsilon (0: start at x).
      projected: project each step back onto the epsilon-ball (else only into the range).
      noise: instead of `seed`, the random start drawn already, a point of the unit ball
        per example shaped like x (`draw_starts`: the evaluation's, the same on every
        backend).

    Returns:
      The examples, in the data range, without gradient.
    """
    x = per_example.as_float(x)
    epsilon = ops.cast(epsilon, x.dtype)
    x_adv = x
    if start:
        if noise is None:
            noise = ball.uniform_in_ball(ops.shape(x), 1.0, attack_norm, seed, x.dtype)
        shift = start * ball.broadcastable(epsilon, len(x.shape)) * ops.cast(noise, x.dtype)
        x_adv = ball.clip_to_range(x + shift, clip_min, clip_max)

    def step(_, x_adv):
        x_adv = ball.ascend(x_adv, input_gradient(model, x_adv, y, loss_fn), epsilon, step_size,
                            attack_norm)
        return (ball.project(x_adv, x, epsilon, attack_norm, clip_min, clip_max) if projected
                else ball.clip_to_range(x_adv, clip_min, clip_max))

    # A loop in the graph, not `steps` copies of the model's gradient: traced once.
    return ops.stop_gradient(ops.fori_loop(0, steps, step, x_adv))


def draw_starts(rngs: list, x: np.ndarray, budget: Any, attack_norm: str) -> tuple:
    """The evaluation's PGD starts, one per restart: points uniform in the unit ball of
    the norm per image, (restarts, *x.shape)."""
    shape = (budget.restarts,) + x.shape[1:]
    entries = int(np.prod(x.shape[1:]))

    def one(rng):
        if attack_norm == "linf":
            return rng.uniform(-1.0, 1.0, shape)
        gaussian = rng.standard_normal((budget.restarts, entries))
        direction = gaussian / np.maximum(np.linalg.norm(gaussian, axis=1, keepdims=True), 1e-12)
        length = rng.uniform(0.0, 1.0, (budget.restarts, 1)) ** (1.0 / entries)
        return (direction * length).reshape(shape)

    return (np.stack([one(rng) for rng in rngs], axis=1).astype(np.float32),)


def _build(model_fn, budget, attack_norm, clip_min, clip_max, top_k):
    """The evaluation's PGD (see attacks.base): the margin loss (top-k's), the budget's
    steps from each restart's start; an image counts as broken if any restart breaks it."""

    def core(x, y, epsilon, targets, starts):
        del targets
        best = x
        for restart in range(budget.restarts):
            candidate = pgd(model_fn, lambda labels, logits: losses.margin(logits, labels, top_k),
                            x, y, epsilon, steps=budget.steps, step_size=budget.pgd_step,
                            attack_norm=attack_norm, clip_min=clip_min, clip_max=clip_max,
                            noise=starts[restart])
            fooled = judge.fooled(model_fn(candidate), y, top_k)
            best = ops.where(per_example.broadcast(fooled, x), candidate, best)
        return best

    return core


PGD = Attack("pgd", "PGD on the margin loss from a random start (Madry et al. 2018)", _build,
             draw_starts, any_top_k=True)
"""The evaluation's PGD."""
