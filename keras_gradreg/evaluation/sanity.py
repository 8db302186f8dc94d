"""The sanity checks of Carlini et al. (2019), "On Evaluating Adversarial Robustness",
that run with every minimum-distance evaluation and warn when they fail."""

from typing import Optional

import numpy as np

from keras_gradreg.attacks import registry
from keras_gradreg.attacks.judge import batches
from keras_gradreg.evaluation.progress import in_batches
from keras_gradreg.evaluation.reports import MASKING_CHECK
from keras_gradreg.evaluation.reports import SanityCheck


UNBOUNDED_SUCCESS = 0.99
"""Fraction of correctly classified images an attack at the largest radius should break."""
GRADIENT_FREE_SHARE = 0.05
"""Share of correctly classified images a gradient-free attack may break, at a radius of
the table, where every gradient attack failed, before that is a warning."""
MORE_STEPS_CHANGE = 0.02
"""Largest rise in PGD's error at a radius, when its steps are doubled, that passes."""
CHECK_IMAGES = 256
"""Images the sanity checks attack: the first CHECK_IMAGES evaluated ones (two batches
of the default 128, so each check's attack traces once). They are checks, not
measurements, sized for what they must detect: on 256 images a rise of
MORE_STEPS_CHANGE is 5 images, and with about 245 of them correctly classified a
gradient-free share of twice GRADIENT_FREE_SHARE fails the masking check with
probability above 0.99 (binomial), while a share of 0 never does."""


def _masking_check(images, correct, attack_distances, budget, progress
                   ) -> Optional[SanityCheck]:
    """Whether a gradient-free attack breaks, at a radius of the table, images that every
    gradient attack left unbroken there: the mark of gradient masking.

    The gradient-free attacks of the evaluation are used if there are any (on every
    correctly classified image: their distances are known). Otherwise Square
    (budget.autoattack.square_queries queries) runs once on each correctly classified
    image of the first CHECK_IMAGES that every gradient attack left unbroken at some
    radius of the table, at the largest such radius (the likeliest to break it).
    None where there is nothing to compare (no gradient attack, no correct image, or
    no gradient-free attack and no (batch, height, width, channels) images for Square).
    """
    x, y, judge = images.x, images.y, images.judge
    gradient_free = {a for a in attack_distances if registry.ATTACKS[a].gradient_free}
    gradient = [d for a, d in attack_distances.items() if a not in gradient_free]
    free = [d for a, d in attack_distances.items() if a in gradient_free]
    checked = correct if free else correct & (np.arange(len(x)) < CHECK_IMAGES)
    if not gradient or not checked.any() or not (free or x.ndim == 4):
        return None
    best_gradient = np.min(gradient, axis=0)
    epsilons = np.sort(images.epsilons)
    # per image, the largest epsilon of the table below its best gradient distance (0: none)
    largest = np.concatenate([[0.0], epsilons])[np.searchsorted(epsilons, best_gradient, "left")]
    unbroken = np.flatnonzero(checked & (largest > 0))
    if free:
        beaten = np.min(free, axis=0)[unbroken] <= largest[unbroken]
        names = [a for a in attack_distances if a in gradient_free]
    else:
        square = registry.make_attack("square", judge, budget)

        def square_batch(idx):
            x_adv = np.asarray(square(x[idx], y[idx], largest[idx]))
            return judge.verify(x_adv, x[idx], y[idx], largest[idx])[0]

        share = -(-int(checked.sum()) // judge.batch_size)  # the progress bar's share
        beaten = np.concatenate([np.zeros(0, bool)] + [
            ok for _, ok in in_batches(square_batch, unbroken, judge.batch_size, progress,
                                       images.workers)])
        progress.add(share - -(-len(unbroken) // judge.batch_size))
        names = ["square"]
    share = float(np.sum(beaten) / checked.sum())
    return SanityCheck(
        MASKING_CHECK, share <= GRADIENT_FREE_SHARE,
        f"{'/'.join(names)} broke {share:.3f} of the {int(checked.sum())} correctly classified "
        f"images it checked, at a radius where every gradient attack failed (a sign of "
        f"gradient masking above {GRADIENT_FREE_SHARE})", share, int(checked.sum()))


def run_checks(images, correct, attack_distances, best, budget, progress) -> list:
    """The checks of Carlini et al. (2019) that this evaluation can run; the PGD checks on
    the first CHECK_IMAGES images.

    Args:
      images: the evaluation's CheckedInputs.
      correct: per image, whether the model classifies it correctly.
      attack_distances: each attack's distances, per image.
      best: each image's best distance.
      budget: the attacks' AttackBudget.
      progress: the evaluation's progress bar.
    """
    x, y, judge, epsilons = images.x, images.y, images.judge, images.epsilons
    checks = []
    subset = np.arange(min(CHECK_IMAGES, len(x)))

    def fixed_radius_error(attack_settings):
        attack = registry.make_attack("pgd", judge, attack_settings)
        errors = []
        for epsilon in epsilons:
            fooled = ~correct[subset]
            for idx in batches(subset, judge.batch_size):
                x_adv = np.asarray(attack(x[idx], y[idx], np.full(len(idx), epsilon)))
                fooled[idx] |= judge.verify(x_adv, x[idx], y[idx])[0]
            errors.append(float(np.mean(fooled)))
            progress.add(1)
        return np.array(errors)

    order = np.argsort(epsilons)
    base = fixed_radius_error(budget)
    drops = np.diff(base[order])
    checks.append(SanityCheck(
        "error grows with epsilon", bool(np.all(drops >= 0)),
        f"PGD error on {len(subset)} images at "
        + ", ".join(f"{epsilons[i]:g}: {base[i]:.3f}" for i in order), images=len(subset),
    ))
    broken = np.mean(np.isfinite(best[correct])) if correct.any() else 1.0
    checks.append(SanityCheck(
        "unbounded attack succeeds", bool(broken >= UNBOUNDED_SUCCESS),
        f"{broken:.3f} of correctly classified images broken at radius {images.max_epsilon:g} "
        f"(expected >= {UNBOUNDED_SUCCESS})",
    ))
    masking = _masking_check(images, correct, attack_distances, budget, progress)
    if masking is not None:
        checks.append(masking)
    doubled = fixed_radius_error(budget.doubled())
    rise = float(np.max(doubled - base)) if len(base) else 0.0
    checks.append(SanityCheck(
        "doubling PGD steps changes little", bool(rise <= MORE_STEPS_CHANGE),
        f"largest rise in error on {len(subset)} images with {2 * budget.steps} instead of "
        f"{budget.steps} steps: {rise:.3f} (allowed {MORE_STEPS_CHANGE})", images=len(subset),
    ))
    return checks
