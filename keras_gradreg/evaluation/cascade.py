"""AutoAttack's protocol (Croce & Hein, ICML 2020; RobustBench): robust error at a
radius under a cascade of attacks, each on the images the earlier ones left unbroken."""

import logging
import numbers
import time
from typing import Any, Optional, Sequence, Union

import numpy as np

from keras_gradreg import penalty as penalty_lib
from keras_gradreg.attacks import registry
from keras_gradreg.attacks.settings import STANDARD_BUDGET
from keras_gradreg.attacks.settings import AttackSettings
from keras_gradreg.attacks.settings import AutoAttackBudget
from keras_gradreg.evaluation import inputs
from keras_gradreg.evaluation.progress import in_batches
from keras_gradreg.evaluation.progress import progress_bar
from keras_gradreg.evaluation.reports import GIVEN
from keras_gradreg.evaluation.reports import AutoAttackReport


def evaluate_autoattack(
    model: Any,
    x: Any,
    y: Any = None,
    *,
    epsilons: Union[float, Sequence[float], None] = None,
    attack_norm: str = penalty_lib.DEFAULT_ATTACK_NORM,
    attacks: Optional[Sequence[str]] = None,
    budget: AutoAttackBudget = STANDARD_BUDGET,
    num_images: int = 1000,
    batch_size: int = 128,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int = 0,
    name: Optional[str] = None,
    adversarial: Optional[np.ndarray] = None,
    workers: Optional[int] = None,
    verbose: int = 1,
) -> list:
    """Robust accuracy under AutoAttack's cascade (Croce & Hein, ICML 2020) at a radius.

    Each attack runs only on the images every earlier one left unbroken; an image counts
    as broken when its example is misclassified, inside the data range and inside the
    radius (up to float32 rounding, see attacks.ball.within_radius), the protocol of
    RobustBench.

    Args:
      model: a Keras classifier (logits or softmax outputs).
      x: images, or a dataset of (images, labels), as for `evaluate_robustness`.
      y: their labels (None with a dataset).
      epsilons: the radius, or several, for one report each (in the order given). They
        run from the smallest, each attack built once, and an image broken within a
        smaller radius counts as broken within the larger ones by the same example
        (which lies inside their balls too): never weaker than separate calls, and cheaper.
      attack_norm: "linf" or "l2".
      attacks: names of AutoAttack's attacks (attacks.ATTACKS), in order (None: its
        "standard" cascade, attacks.SETS["standard"]).
      budget: the attacks' budgets (an AutoAttackBudget; default "standard").
      num_images: how many images; with arrays, a random subset chosen by `seed`.
      batch_size: images per attack call.
      clip_min: the data range's lowest value.
      clip_max: the data range's highest value.
      seed: seeds the choice of images and the attacks.
      name: the model's name (default: model.name).
      adversarial: optionally, adversarial examples found earlier, one per image of x
        (e.g. `RobustnessReport.adversarial` of the same images, whose distances the
        minimum-distance protocol verified). An image whose example is misclassified,
        in the data range and within the radius counts as broken by GIVEN, before the
        cascade, which then skips it: robust error of the cascade and the given examples
        together, never below the cascade's alone, and cheaper.
      workers: batches attacked at the same time (see evaluate_robustness).
      verbose: 1 shows a progress bar per attack and radius (and logs, at INFO, which
        attack runs on how many images).

    Returns:
      A list of AutoAttackReports, one per radius, in the order given; with
      `adversarial`, GIVEN is the first of their `attacks`.

    Raises:
      ValueError: a bad argument, before any attack runs.
    """
    if epsilons is None:
        raise TypeError("evaluate_autoattack needs `epsilons`: a radius, or several.")
    if not isinstance(budget, AutoAttackBudget):
        raise ValueError(f"budget={budget!r} must be an AutoAttackBudget.")
    several = not isinstance(epsilons, (numbers.Number, str))
    images = inputs.prepare(
        "evaluate_autoattack", model, x, y, protocol="autoattack", attacks=attacks,
        attack_norm=attack_norm, epsilons=list(epsilons) if several else [epsilons],
        num_images=num_images, batch_size=batch_size, clip_min=clip_min, clip_max=clip_max,
        seed=seed, workers=workers, given=adversarial)
    x, y, judge, radii = images.x, images.y, images.judge, images.epsilons
    batch_size = judge.batch_size
    settings = AttackSettings(autoattack=budget)
    stages = {attack_name: registry.make_attack(attack_name, judge, settings, seed + 1000 * number)
              for number, attack_name in enumerate(images.attacks)}
    run = {attack_name: lambda idx, eps, attack=attack: attack(x[idx], y[idx],
                                                               np.full(len(idx), eps))
           for attack_name, attack in stages.items()}
    if images.given is not None:  # looked up by position, before the cascade
        run = {GIVEN: lambda idx, eps: images.given[idx], **run}
    broken_by = np.where(judge.misclassified(x, y), "clean", "none").astype(object)
    examples = x.copy()
    reports = {}
    for eps in sorted(set(radii)):
        broken_by, examples = broken_by.copy(), examples.copy()
        robust_after, seconds = {}, {}
        for attack_name, attack in run.items():
            todo = np.flatnonzero(broken_by == "none")
            shown = verbose if attack_name != GIVEN else 0
            if shown:
                logging.getLogger(__name__).info("%s at %g: %d images", attack_name, eps,
                                                 len(todo))
            progress = progress_bar(-(-len(todo) // batch_size), shown, "batch")
            start = time.perf_counter()

            def attack_batch(idx, attack=attack, eps=eps):
                x_adv = np.asarray(attack(idx, eps))
                return x_adv, judge.verify(x_adv, x[idx], y[idx], eps)[0]

            for idx, (x_adv, ok) in in_batches(attack_batch, todo, batch_size, progress,
                                               images.workers):
                broken_by[idx[ok]] = attack_name
                examples[idx[ok]] = x_adv[ok]
            seconds[attack_name] = time.perf_counter() - start
            robust_after[attack_name] = float(np.mean(broken_by == "none"))
        reports[eps] = AutoAttackReport(
            name=name or getattr(model, "name", "model"), attack_norm=attack_norm, epsilon=eps,
            attacks=tuple(run), broken_by=broken_by.astype(str), adversarial=examples,
            indices=images.indices, robust_after=robust_after, seconds=seconds, budget=budget)
    return [reports[eps] for eps in radii]
