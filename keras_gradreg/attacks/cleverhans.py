"""CleverHans' attacks on Keras 3 models: small adapters where CleverHans 4.0.0 breaks,
and its fixed-budget attacks run at one radius per image.

`cleverhans.tf2.attacks` (4.0.0, the last release) predates Keras 3. Two of its attacks
break there and get small adapters here: Carlini-Wagner L2 calls
`optimizer.variables()` (a list property in Keras 3) and SPSA builds its Adam with
`lr=` (Keras 3 only accepts `learning_rate=`). CW also turns itself into a targeted
attack whenever labels are given, mended here too. FGM, BIM and MIM are called as they
are. This module, and CleverHans with it, is imported when a CleverHans attack is first
built (attacks.registry); they run on the TensorFlow backend only. SPSA draws from
TensorFlow's global random generator: seed it (tf.random.set_seed) for a repeatable SPSA.
"""

from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks import carlini_wagner_l2 as cleverhans_cw
from cleverhans.tf2.attacks import spsa as cleverhans_spsa
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
from cleverhans.tf2.attacks.momentum_iterative_method import momentum_iterative_method
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

from keras_gradreg.attacks import judge
from keras_gradreg.attacks import losses
from keras_gradreg.attacks.budgets import AttackBudget

_ORD = {"l2": 2, "linf": np.inf}


class _ResettableAdam:
    """The optimizer CarliniWagnerL2 expects: it "resets" Adam by zeroing `variables()`.

    Zeroing every Keras 3 optimizer variable would also zero the learning rate, so a
    fresh Adam stands in for the reset instead.
    """

    def __init__(self, learning_rate: float):
        self.learning_rate = learning_rate
        self._adam = keras.optimizers.Adam(learning_rate)

    def variables(self) -> list:
        self._adam = keras.optimizers.Adam(self.learning_rate)
        return []

    def apply_gradients(self, grads_and_vars) -> None:
        self._adam.apply_gradients(grads_and_vars)


class CarliniWagnerL2(cleverhans_cw.CarliniWagnerL2):
    """CleverHans' CarliniWagnerL2, runnable on Keras 3 and untargeted with true labels.

    Besides the optimizer, it mends `targeted`: CleverHans sets it to `y is not None`,
    so an untargeted attack given the true labels would aim *at* them and do nothing.
    """

    def __init__(self, model_fn: Callable, targeted: bool = False, **kwargs):
        super().__init__(model_fn, targeted=targeted, **kwargs)
        self.targeted = targeted
        self.optimizer = _ResettableAdam(self.learning_rate)


class _LrAdam(keras.optimizers.Adam):
    """Keras 3's Adam under the TF2-era interface SPSAAdam was written for (`lr`)."""

    def __init__(self, lr: float = 0.01, **kwargs):
        super().__init__(learning_rate=lr, **kwargs)

    @property
    def lr(self):
        return self.learning_rate


class SPSAAdam(cleverhans_spsa.SPSAAdam, _LrAdam):
    """CleverHans' SPSAAdam, whose `super().__init__(lr=...)` now lands in _LrAdam."""


def spsa(model_fn: Callable, x: tf.Tensor, y: tf.Tensor, epsilon: float, budget: AttackBudget,
         clip_min: float, clip_max: float) -> tf.Tensor:
    """CleverHans' SPSA (l_inf, one image at a time), stopping once the image is misclassified."""

    def loss_fn(images, label):
        logits = model_fn(images)
        return -cleverhans_spsa.margin_logit_loss(logits, label, nb_classes=logits.shape[-1])

    optimizer = SPSAAdam(lr=budget.spsa_learning_rate, delta=budget.spsa_delta,
                         num_samples=budget.spsa_samples, num_iters=1)
    return cleverhans_spsa.projected_optimization(
        loss_fn, x, y, epsilon, budget.steps, optimizer, clip_min, clip_max,
        early_stop_loss_threshold=0.0,
    )


def _margin(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    return losses.margin(logits, labels)


def _unit_radius_attack(name: str, attack_norm: str, budget: AttackBudget) -> Callable:
    """FGM, BIM or MIM at radius 1, as f(model_fn, x, y, clip_min, clip_max). FGM and BIM
    ascend the margin loss; CleverHans' MIM takes no loss and ascends the cross-entropy."""
    order = _ORD[attack_norm]

    def run(model_fn, x, y, clip_min, clip_max):
        common = dict(norm=order, clip_min=clip_min, clip_max=clip_max, y=y, sanity_checks=False)
        if name == "mim":
            return momentum_iterative_method(model_fn, x, 1.0, 1.0 / budget.steps,
                                             budget.steps, **common)
        if name == "fgm":
            return fast_gradient_method(model_fn, x, 1.0, loss_fn=_margin, **common)
        return projected_gradient_descent(model_fn, x, 1.0, budget.pgd_step, budget.steps,
                                          loss_fn=_margin, rand_init=False, **common)

    return run


def rescaled_attack(name: str, model_fn: Callable, budget: AttackBudget, *,
                    attack_norm: str, clip_min: float, clip_max: float) -> Callable:
    """FGM, BIM or MIM with one radius per image, as a TensorFlow f(x, y, epsilon) -> x_adv
    (x itself where it failed).

    CleverHans takes one radius per call; in the coordinates z = x + (x' - x) / eps_i
    every image's ball has radius 1, so the attack runs there on the model
    z -> model_fn(x + eps_i (z - x)), with the data range mapped the same way.
    """
    unit = _unit_radius_attack(name, attack_norm, budget)

    def attack(x, y, epsilon):
        scale = tf.reshape(epsilon, [-1] + [1] * (len(x.shape) - 1))

        def scaled_model(z):
            return model_fn(x + scale * (z - x))

        z = unit(scaled_model, x, y, x + (clip_min - x) / scale, x + (clip_max - x) / scale)
        candidate = tf.clip_by_value(x + scale * (z - x), clip_min, clip_max)
        fooled = judge.fooled(model_fn(candidate), y)
        return tf.where(tf.reshape(fooled, tf.shape(scale)), candidate, x)

    return attack


def untraced_attack(name: str, model_fn: Callable, budget: AttackBudget, clip_min: float,
                    clip_max: float) -> Callable:
    """CW-L2 (which minimises the distance: epsilon is ignored) or SPSA (l_inf, one image at a
    time), as f(x, y, epsilon) -> x_adv on NumPy batches (x itself where it failed)."""
    if name == "spsa":
        def attack_one_by_one(x, y, epsilon):
            return np.concatenate([
                spsa(model_fn, x[i:i + 1], y[i:i + 1], float(epsilon[i]), budget, clip_min, clip_max)
                for i in range(len(epsilon))], axis=0)

        return attack_one_by_one

    def carlini_wagner(x, y, epsilon):
        del epsilon  # CW minimises the distance itself
        classes = int(model_fn(x[:1]).shape[1])
        cw = CarliniWagnerL2(
            model_fn, y=tf.one_hot(y, classes), batch_size=len(x), clip_min=clip_min,
            clip_max=clip_max, binary_search_steps=budget.cw_binary_steps,
            max_iterations=budget.cw_iterations, learning_rate=budget.cw_learning_rate,
            initial_const=1e-2)
        return np.asarray(cw.attack(np.asarray(x, np.float32)))

    return carlini_wagner


def build(name: str, model_fn: Callable, budget: AttackBudget, attack_norm: str,
          clip_min: float, clip_max: float, top_k: int) -> Callable:
    """The core of CleverHans' attack `name` (see attacks.base): FGM, BIM and MIM at one
    radius per image (`rescaled_attack`), CW-L2 and SPSA as Python (`untraced_attack`)."""
    del top_k  # top-1 only (the registry refuses them with top_k > 1)
    if name in ("cw", "spsa"):
        attack = untraced_attack(name, model_fn, budget, clip_min, clip_max)
        return lambda x, y, epsilon, targets: attack(np.asarray(x), np.asarray(y),
                                                     np.asarray(epsilon))
    attack = rescaled_attack(name, model_fn, budget, attack_norm=attack_norm,
                             clip_min=clip_min, clip_max=clip_max)
    return lambda x, y, epsilon, targets: attack(x, tf.cast(y, tf.int64), epsilon)
