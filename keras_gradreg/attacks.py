"""CleverHans attacks on Keras 3 models, turned into minimum-distance attacks.

`cleverhans.tf2.attacks` (4.0.0, the last release) predates Keras 3. Two of its attacks
break there and get small adapters here: Carlini-Wagner L2 calls
`optimizer.variables()` (a list property in Keras 3) and SPSA builds its Adam with
`lr=` (Keras 3 only accepts `learning_rate=`). CW also turns itself into a targeted
attack whenever labels are given, mended here too. The other attacks (FGM, BIM, PGD,
MIM) are called as they are.

A fixed-budget attack answers "is there an adversarial example within eps?". To find
each image's smallest adversarial distance it is run inside a per-image search over eps
(see `minimum_distance`); CW-L2 minimises the l2 distance itself.
"""

import dataclasses
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks import carlini_wagner_l2 as cleverhans_cw
from cleverhans.tf2.attacks import spsa as cleverhans_spsa
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
from cleverhans.tf2.attacks.momentum_iterative_method import momentum_iterative_method
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

from keras_gradreg import autoattack as autoattack_lib
from keras_gradreg.autoattack import perturbation_norm
from keras_gradreg import validation
from keras_gradreg.metrics import misclassification_margin

ATTACKS = {
    "fgm": ("l2", "linf"),
    "bim": ("l2", "linf"),
    "pgd": ("l2", "linf"),
    "mim": ("l2", "linf"),
    "cw": ("l2",),
    "spsa": ("linf",),
    **autoattack_lib.CASCADE_ATTACKS,
}
"""Attack names and the norms each supports (CleverHans' CW is l2-only, its SPSA l_inf-only;
the rest of the names are AutoAttack's, see keras_gradreg.autoattack)."""

GRADIENT_FREE = ("spsa", "square")
MINIMUM_DISTANCE = ("cw", "fab_t")
"""Attacks that minimise the distance themselves, instead of inside a search over radii."""
_ORD = {"l2": 2, "linf": np.inf}


@dataclasses.dataclass(frozen=True)
class AttackSettings:
    """Budgets of the attacks; the defaults are the usual ones in the literature.

    Attributes:
      steps: iterations of BIM, PGD, MIM and SPSA at each radius.
      step_fraction: PGD/BIM step size as a multiple of radius / steps (Madry et al.: 2.5).
      restarts: PGD runs from independent random starts; an image counts as broken if
        any run breaks it.
      search_steps: radii tried per image in the minimum-distance search, at most.
      search_tolerance: an image's search stops early once its bracket's relative width
        (largest failing to smallest breaking radius) is at most this; 0: never early
        (with warm_start=False, the search of 0.4 exactly).
      warm_start: search each attack after the first from the best distance the
        earlier ones found: it runs there first, and only the images it breaks there are
        searched below, first at (1 - WARM_BRACKET) of it. An image it cannot break
        there keeps the earlier distance, and the attack's own is recorded as inf (so
        `success_rates` then counts where each later attack matched or beat the earlier
        ones). FAB-T and CW, which minimise the distance themselves, need no start and
        always record their own. Put the attack you trust most first: it searches every
        image from the data range's width. False: every attack does, as before 0.5.
      cw_binary_steps, cw_iterations, cw_learning_rate: Carlini-Wagner's search over its
        constant, its Adam steps per constant and their size.
      spsa_samples, spsa_learning_rate, spsa_delta: SPSA's gradient estimate.
      autoattack: the budgets of AutoAttack's attacks inside the radius search, which
        runs each at about search_steps radii: SEARCH_BUDGET by default, 20 iterations
        like PGD's rather than the fixed-radius protocol's 100; Square's queries also
        serve the gradient-masking sanity check.
    """

    steps: int = 20
    step_fraction: float = 2.5
    restarts: int = 1
    search_steps: int = 12
    search_tolerance: float = 2.0 ** -11
    warm_start: bool = True
    cw_binary_steps: int = 5
    cw_iterations: int = 100
    cw_learning_rate: float = 0.01
    spsa_samples: int = 128
    spsa_learning_rate: float = 0.01
    spsa_delta: float = 0.01
    autoattack: autoattack_lib.AutoAttackBudget = autoattack_lib.SEARCH_BUDGET

    def __post_init__(self):
        counts = ("steps", "restarts", "search_steps", "cw_binary_steps", "cw_iterations",
                  "spsa_samples")
        for field in dataclasses.fields(self):
            if field.name == "warm_start":
                if not isinstance(self.warm_start, bool):
                    raise ValueError(f"AttackSettings warm_start={self.warm_start!r} must be True "
                                     "or False.")
                continue
            if field.name == "autoattack":
                if not isinstance(self.autoattack, autoattack_lib.AutoAttackBudget):
                    raise ValueError(f"AttackSettings autoattack={self.autoattack!r} must be an "
                                     "AutoAttackBudget.")
                continue
            rules = (dict(low=1, low_open=False, integer=True) if field.name in counts
                     else dict(low_open=False, high=1, high_open=True)
                     if field.name == "search_tolerance"
                     else {})
            value = validation.check_number(f"AttackSettings {field.name}",
                                            getattr(self, field.name), **rules)
            object.__setattr__(self, field.name, value)  # a Python number (frozen dataclass)
        if self.spsa_samples % 2:
            raise ValueError(f"AttackSettings spsa_samples={self.spsa_samples!r} must be even.")

    def doubled(self) -> "AttackSettings":
        """The same settings with twice the iterations (a sanity check)."""
        return dataclasses.replace(self, steps=2 * self.steps)


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


def spsa(model_fn: Callable, x: tf.Tensor, y: tf.Tensor, eps: float, settings: AttackSettings,
         clip_min: float, clip_max: float) -> tf.Tensor:
    """CleverHans' SPSA (l_inf, one image at a time), stopping once the image is misclassified."""

    def loss_fn(images, label):
        logits = model_fn(images)
        return -cleverhans_spsa.margin_logit_loss(logits, label, nb_classes=logits.shape[-1])

    optimizer = SPSAAdam(lr=settings.spsa_learning_rate, delta=settings.spsa_delta,
                         num_samples=settings.spsa_samples, num_iters=1)
    return cleverhans_spsa.projected_optimization(
        loss_fn, x, y, eps, settings.steps, optimizer, clip_min, clip_max,
        early_stop_loss_threshold=0.0,
    )


def margin_loss(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """max_{j != y} z_j - z_y, positive exactly when misclassified (the CW loss).

    The gradient attacks ascend it instead of the cross-entropy: its maximiser in a ball
    crosses the nearest decision boundary, which is what a minimum distance needs.
    """
    return misclassification_margin(logits, labels, margin="logit")


def _unit_radius_attack(name: str, attack_norm: str, settings: AttackSettings) -> Callable:
    """The CleverHans attack `name` at radius 1, as f(model_fn, x, y, clip_min, clip_max)."""
    order = _ORD[attack_norm]

    def run(model_fn, x, y, clip_min, clip_max):
        common = dict(norm=order, clip_min=clip_min, clip_max=clip_max, y=y, sanity_checks=False)
        if name == "mim":  # CleverHans' MIM has no loss argument: cross-entropy
            return momentum_iterative_method(model_fn, x, 1.0, 1.0 / settings.steps,
                                             settings.steps, **common)
        if name == "fgm":
            return fast_gradient_method(model_fn, x, 1.0, loss_fn=margin_loss, **common)
        step = min(1.0, settings.step_fraction / settings.steps)
        return projected_gradient_descent(model_fn, x, 1.0, step, settings.steps,
                                          loss_fn=margin_loss, rand_init=name == "pgd", **common)

    return run


def fixed_budget_attack(model_fn: Callable, name: str, attack_norm: str, settings: AttackSettings,
                        clip_min: float, clip_max: float, seed: int = 0,
                        cache: Optional[dict] = None) -> Callable:
    """A batched attack with one radius per image: f(x, y, eps) -> x_adv, ||x_adv - x|| <= eps.

    CleverHans takes one radius per call; in the coordinates z = x + (x' - x) / eps_i
    every image's ball has radius 1, so the attack runs there on the model
    z -> model_fn(x + eps_i (z - x)), with the data range mapped the same way.
    (SPSA, one image at a time, and AutoAttack's attacks take their radii directly.)
    `cache`: see autoattack.traced_per_image_shape.
    """
    if name in autoattack_lib.CASCADE_ATTACKS:
        return autoattack_lib.make_attack(name, model_fn, attack_norm, settings.autoattack,
                                          clip_min, clip_max, seed, cache)
    if name == "spsa":
        def attack_one_by_one(x, y, eps):
            return tf.concat([
                spsa(model_fn, x[i:i + 1], y[i:i + 1], float(eps[i]), settings, clip_min, clip_max)
                for i in range(len(eps))
            ], axis=0)

        return attack_one_by_one

    unit = _unit_radius_attack(name, attack_norm, settings)
    restarts = settings.restarts if name == "pgd" else 1

    def attack(x, y, eps):
        scale = tf.reshape(eps, [-1] + [1] * (len(x.shape) - 1))

        def scaled_model(z):
            return model_fn(x + scale * (z - x))

        z_min, z_max = x + (clip_min - x) / scale, x + (clip_max - x) / scale
        best = x
        for _ in range(restarts):
            z = unit(scaled_model, x, y, z_min, z_max)
            candidate = tf.clip_by_value(x + scale * (z - x), clip_min, clip_max)
            fooled = tf.not_equal(tf.argmax(model_fn(candidate), axis=1), y)
            best = tf.where(tf.reshape(fooled, tf.shape(scale)), candidate, best)
        return best

    run = autoattack_lib.traced_per_image_shape(
        attack, cache=cache, key=(name, model_fn, attack_norm, settings, clip_min, clip_max))
    return lambda x, y, eps: run(np.asarray(x, np.float32), np.asarray(y, np.int64),
                                 np.asarray(eps, np.float32))


def carlini_wagner(model_fn: Callable, settings: AttackSettings, clip_min: float,
                   clip_max: float, num_classes: int) -> Callable:
    """CW-L2 as f(x, y) -> x_adv (x itself where it fails)."""

    def attack(x, y):
        labels = tf.one_hot(y, num_classes)
        cw = CarliniWagnerL2(
            model_fn, y=labels, batch_size=len(x), clip_min=clip_min, clip_max=clip_max,
            binary_search_steps=settings.cw_binary_steps, max_iterations=settings.cw_iterations,
            learning_rate=settings.cw_learning_rate, initial_const=1e-2,
        )
        return tf.convert_to_tensor(cw.attack(x.numpy()))

    return attack


WARM_BRACKET = 1 / 16
"""A warm-started search's first step down: an attack that breaks an image at the best
distance so far is tried next at (1 - WARM_BRACKET) of it. Attacks that break an image
at a radius mostly fail a few percent below it, so most searches then bisect a bracket
of that relative width (8 halvings to search_tolerance's default) instead of the data
range's."""


def minimum_distance(attack: Callable, is_adversarial: Callable, x: np.ndarray, y: np.ndarray,
                     attack_norm: str, max_eps: float, steps: int, tolerance: float = 0.0,
                     start: Optional[np.ndarray] = None) -> tuple:
    """Each image's smallest adversarial distance an attack finds, by a per-image search.

    The attack first runs at `max_eps` (or at the image's `start`); images it cannot
    break there get distance inf. Then, for every broken image, the radius is divided
    by 4 until the attack fails (geometric phase; from a start, the first step is to
    (1 - WARM_BRACKET) of it), then bisected between the largest failing and smallest
    succeeding radius, until the bracket's relative width is at most `tolerance` or
    `steps` radii were tried. Only verified examples count (misclassified, see
    `is_adversarial`), and the distance recorded is the norm of the best one's actual
    perturbation, which is at most the bracket's upper end.

    Args:
      attack: f(x, y, eps) -> x_adv, one radius per image.
      is_adversarial: f(x_adv, y) -> bool per image.
      x, y: images and integer labels.
      attack_norm: "l2" or "linf".
      max_eps: the largest radius tried.
      steps: radii tried per image after the first, at most.
      tolerance: relative bracket width at which an image's search stops.
      start: per image, where to run first (e.g. the best distance earlier attacks
        found; inf or None: at max_eps).

    Returns:
      (distances, adversarial examples, relative width of each final bracket): inf and
      x itself where the attack failed.
    """
    n = len(x)
    first = np.full(n, float(max_eps)) if start is None else np.minimum(start, max_eps)
    hi = first.copy()
    lo = np.zeros(n)
    shrink = np.where(first < max_eps, 1 - WARM_BRACKET, 1 / 4)
    best = np.array(x, copy=True)
    distance = np.full(n, np.inf)

    def try_radius(idx, eps):
        x_adv = np.asarray(attack(x[idx], y[idx], eps))
        ok = is_adversarial(x_adv, y[idx])
        dist = perturbation_norm(x_adv, x[idx], attack_norm)
        better = ok & (dist < distance[idx])
        distance[idx[better]] = dist[better]
        best[idx[better]] = x_adv[better]
        return ok

    idx = np.flatnonzero(try_radius(np.arange(n), hi))
    for _ in range(steps):
        idx = idx[(hi[idx] - lo[idx]) > tolerance * hi[idx]]
        if not len(idx):
            break
        eps = np.where(lo[idx] > 0, (lo[idx] + hi[idx]) / 2, hi[idx] * shrink[idx])
        ok = try_radius(idx, eps)
        hi[idx] = np.where(ok, np.minimum(eps, hi[idx]), hi[idx])
        lo[idx] = np.where(ok, lo[idx], eps)
        shrink[idx] = 1 / 4
    hi = np.minimum(hi, distance)  # the bracket's top is the best verified distance
    width = np.where(np.isfinite(distance), (hi - lo) / np.maximum(hi, 1e-300), 0.0)
    return distance, best, width
