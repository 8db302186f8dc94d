"""Projected gradient descent (Madry et al., ICLR 2018), the one PGD of the library, on
either Keras backend: adversarial training (PGD-AT; FGSM from a random start and N-FGSM
are its one-step cases), TRADES' examples, the held-out monitor, the evaluation's
"pgd" attack and its sanity checks all call `pgd`.
"""

import dataclasses
from typing import Any, Callable, Optional

from keras import ops

from keras_gradreg import backend
from keras_gradreg import per_example
from keras_gradreg.attacks import ball

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
    """grad_x of the per-example loss `loss_fn(y, model(x))`, shaped like x, taken by the
    backend module (keras_gradreg/backend/)."""
    clean = backend.clean_pass(model, x, y, loss_fn, training)
    return ops.cast(ops.reshape(clean.gradient, ops.shape(x)), x.dtype)


def pgd(model: Callable, loss_fn: Callable, x: Any, y: Any, epsilon: Any, *, steps: int,
        step_size: float, seed: Any, attack_norm: str = "linf", clip_min: float = 0.0,
        clip_max: float = 1.0, start: float = 1.0, projected: bool = True) -> Any:
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
      seed: a stateless seed, shape (2,), for the random start.
      attack_norm: "linf" or "l2".
      clip_min: the data range's lowest value.
      clip_max: the data range's highest value.
      start: the random start's radius, a multiple of epsilon (0: start at x).
      projected: project each step back onto the epsilon-ball (else only into the range).

    Returns:
      The examples, in the data range, without gradient.
    """
    x = per_example.as_float(x)
    epsilon = ops.cast(epsilon, x.dtype)
    x_adv = x
    if start:
        x_adv = ball.clip_to_range(x + ball.uniform_in_ball(
            ops.shape(x), start * epsilon, attack_norm, seed, x.dtype), clip_min, clip_max)

    def step(_, x_adv):
        x_adv = ball.ascend(x_adv, input_gradient(model, x_adv, y, loss_fn), epsilon, step_size,
                            attack_norm)
        return (ball.project(x_adv, x, epsilon, attack_norm, clip_min, clip_max) if projected
                else ball.clip_to_range(x_adv, clip_min, clip_max))

    # A loop in the graph, not `steps` copies of the model's gradient: traced once.
    return ops.stop_gradient(ops.fori_loop(0, steps, step, x_adv))
