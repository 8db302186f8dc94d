"""AutoAttack's protocol (Croce & Hein, ICML 2020; RobustBench): robust error at a
radius under a cascade of attacks, each on the images the earlier ones left unbroken."""

import logging
import numbers
import time
from typing import Any, Optional, Sequence, Union

import numpy as np

from keras_gradreg import per_example
from keras_gradreg import validation
from keras_gradreg.attacks import registry
from keras_gradreg.attacks.budgets import BUDGETS
from keras_gradreg.attacks.budgets import STANDARD_BUDGET
from keras_gradreg.attacks.budgets import AttackBudget
from keras_gradreg.attacks.budgets import AutoAttackBudget
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
    attack_norm: str = per_example.DEFAULT_ATTACK_NORM,
    attacks: Optional[Sequence[str]] = None,
    budget: Union[AutoAttackBudget, str] = STANDARD_BUDGET,
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
    as broken when its example is verified (attacks.judge: misclassified, in the data
    range, within the radius), the protocol of RobustBench.

    Args:
      model: a Keras classifier (logits or softmax outputs).
      x: images, or a dataset of (images, labels), as for `evaluate_robustness`.
      y: their labels (None with a dataset).
      epsilons: the radius, or several, for one report each (in the order given). They
        run from the smallest, and an image broken within a smaller radius counts as
        broken within the larger ones: never weaker than separate calls, and cheaper.
      attack_norm: "linf" or "l2".
      attacks: names of AutoAttack's attacks (attacks.ATTACKS), in order (None: its
        "standard" cascade, attacks.SETS["standard"]).
      budget: the attacks' budgets: an AutoAttackBudget or the name of one in
        `attacks.budgets.BUDGETS` ("standard", the default, or "quick").
      num_images: how many images; with arrays, a random subset chosen by `seed`.
      batch_size: images per attack call.
      clip_min: the data range's lowest value.
      clip_max: the data range's highest value.
      seed: seeds the choice of images and the attacks.
      name: the model's name (default: model.name).
      adversarial: optionally, adversarial examples found earlier, one per image of x
        (e.g. `RobustnessReport.adversarial` of the same images). An image whose example
        is verified within the radius counts as broken by GIVEN, before the cascade,
        which skips it: never below the cascade's robust error alone, and cheaper.
      workers: batches attacked at the same time (see evaluate_robustness).
      verbose: 1 shows a progress bar per attack and radius, and logs (INFO) how many
        images each attack runs on.

    Returns:
      A list of AutoAttackReports, one per radius, in the order given; with
      `adversarial`, GIVEN is the first of their `attacks`.

    Raises:
      ValueError: a bad argument, before any attack runs.
    """
    budget = _check_budget(epsilons, budget)
    images = inputs.prepare(
        model, x, y, protocol="autoattack", attacks=attacks,
        attack_norm=attack_norm, epsilons=_as_list(epsilons), num_images=num_images,
        batch_size=batch_size, clip_min=clip_min, clip_max=clip_max, seed=seed,
        workers=workers, given=adversarial)
    run = _stages(images, AttackBudget(autoattack=budget), seed)
    broken_by = np.where(images.judge.misclassified(images.x, images.y), "clean",
                         "none").astype(object)
    examples = images.x.copy()
    reports = {}
    for epsilon in sorted(set(images.epsilons)):
        broken_by, examples = broken_by.copy(), examples.copy()
        robust_after, seconds = _cascade(images, run, epsilon, broken_by, examples, verbose)
        reports[epsilon] = AutoAttackReport(
            name=name or getattr(model, "name", "model"), attack_norm=attack_norm,
            epsilon=epsilon, attacks=tuple(run), broken_by=broken_by.astype(str),
            adversarial=examples, indices=images.indices, robust_after=robust_after,
            seconds=seconds, budget=budget)
    return [reports[epsilon] for epsilon in images.epsilons]


def _check_budget(epsilons: Any, budget: Union[AutoAttackBudget, str]) -> AutoAttackBudget:
    """The budget (given or by name), or an error naming a bad budget or missing epsilons."""
    if epsilons is None:
        raise TypeError("evaluate_autoattack needs `epsilons`: a radius, or several.")
    if isinstance(budget, str):
        budget = BUDGETS[validation.check_choice("budget", budget, tuple(BUDGETS))]
    if not isinstance(budget, AutoAttackBudget):
        raise ValueError(f"budget={budget!r} must be an AutoAttackBudget or one of "
                         f"{sorted(BUDGETS)}.")
    return budget


def _as_list(epsilons: Union[float, Sequence[float]]) -> list:
    """One epsilon or several, as a list."""
    return [epsilons] if isinstance(epsilons, (numbers.Number, str)) else list(epsilons)


def _stages(images: inputs.CheckedInputs, budget: AttackBudget, seed: int) -> dict:
    """The cascade's stages in order, by name: f(indices, epsilon) -> examples of those
    images (GIVEN first, looked up by position, when earlier examples were passed)."""
    x, y = images.x, images.y
    stages = {name: registry.make_attack(name, images.judge, budget, seed + 1000 * number)
              for number, name in enumerate(images.attacks)}
    run = {name: lambda idx, epsilon, attack=attack: attack(x[idx], y[idx],
                                                           np.full(len(idx), epsilon))
           for name, attack in stages.items()}
    if images.given is not None:
        run = {GIVEN: lambda idx, epsilon: images.given[idx], **run}
    return run


def _cascade(images: inputs.CheckedInputs, run: dict, epsilon: float, broken_by: np.ndarray,
             examples: np.ndarray, verbose: int) -> tuple:
    """Every stage at one epsilon, each on the images still unbroken; `broken_by` and
    `examples` are updated in place. Returns (robust share after each stage, its seconds)."""
    x, y, judge = images.x, images.y, images.judge
    robust_after, seconds = {}, {}
    for name, attack in run.items():
        todo = np.flatnonzero(broken_by == "none")
        shown = verbose if name != GIVEN else 0
        if shown:
            logging.getLogger(__name__).info("%s at %g: %d images", name, epsilon, len(todo))
        progress = progress_bar(-(-len(todo) // judge.batch_size), shown, "batch")
        start = time.perf_counter()

        def attack_batch(idx, attack=attack):
            x_adv = np.asarray(attack(idx, epsilon))
            return x_adv, judge.verify(x_adv, x[idx], y[idx], epsilon)[0]

        for idx, (x_adv, ok) in in_batches(attack_batch, todo, judge.batch_size, progress,
                                           images.workers):
            broken_by[idx[ok]] = name
            examples[idx[ok]] = x_adv[ok]
        seconds[name] = time.perf_counter() - start
        robust_after[name] = float(np.mean(broken_by == "none"))
    return robust_after, seconds
