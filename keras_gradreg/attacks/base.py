"""What an attack of the evaluations is: a spec each attack file declares (its name, what
it supports, its budget) and how it is built, listed by attacks.registry.

An attack's core is `core(x, y, epsilon, targets, *draws) -> x_adv` on tensors, written in
keras.ops: x a batch of images, y their integer labels, epsilon one radius per image
(inf for an attack that minimises the distance itself), targets one class per image (the
labels for an untargeted attack), and `draws` the random numbers it uses, drawn on the
host with NumPy (`Attack.draws`), image by image, so that the same seed gives the same
attack on every Keras backend.
"""

import dataclasses
from typing import Any, Callable, Optional

import numpy as np

from keras_gradreg.attacks import ball

ALL_BACKENDS = ("tensorflow", "jax", "torch")
"""The Keras backends an attack written in keras.ops runs on."""


def no_draws(rngs: list, x: np.ndarray, budget: Any, attack_norm: str) -> tuple:
    """The draws of an attack that draws nothing."""
    del rngs, x, budget, attack_norm
    return ()


@dataclasses.dataclass(frozen=True)
class Attack:
    """One attack of the evaluations.

    Attributes:
      name: its name (`attacks=`, `--attacks`).
      description: what it is, with its source.
      build: f(model_fn, budget, attack_norm, clip_min, clip_max, top_k) -> its core (see
        the module docstring); `budget` is an AttackBudget, or the AutoAttackBudget of
        AutoAttack's attacks.
      draws: f(rngs, x, budget, attack_norm) -> the random arrays one call of the core
        takes, for the batch x: image i's from rngs[i] (NumPy Generators).
      norms: the norms it attacks in.
      autoattack: one of AutoAttack's attacks (Croce & Hein, ICML 2020): its budget is an
        AutoAttackBudget, and the AutoAttack protocol (the cascade) can run it.
      targeted: runs once per runner-up class.
      gradient_free: queries the model's outputs only.
      minimises_distance: finds a small distance itself, so the minimum-distance protocol
        runs it once, without a search over epsilons, and keeps the closest example of its
        targeted runs.
      deterministic: depends neither on epsilon nor on random draws, so a targeted run's
        result on an image can be remembered for a later, larger epsilon (FAB-T).
      min_classes: the fewest classes of a model it can attack.
      images_only: needs (batch, height, width, channels) inputs.
      any_top_k: can push the label out of the top k classes for any k (top-5 error);
        the others aim at top-1 misclassification only.
      backends: the Keras backends it runs on (CleverHans': TensorFlow only).
      compiled: its core runs compiled (a graph, or jitted); CleverHans' CW and SPSA run
        as Python, a batch (CW) or an image (SPSA) at a time.
      batch_multiple: its batches are padded to a multiple of this where its `fused`
        kernels compile per batch size and the graph does not (FAB on TensorFlow:
        `backend.*.PADDING`).
    """

    name: str
    description: str
    build: Callable
    draws: Callable = no_draws
    norms: tuple = ball.NORMS
    autoattack: bool = False
    targeted: bool = False
    gradient_free: bool = False
    minimises_distance: bool = False
    deterministic: bool = False
    min_classes: int = 2
    images_only: bool = False
    any_top_k: bool = False
    backends: tuple = ALL_BACKENDS
    compiled: bool = True
    batch_multiple: Optional[int] = None
