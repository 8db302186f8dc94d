"""The paper's protocol (Finlay & Oberman, 2019): each image's smallest adversarial
distance over every attack, "% error at epsilon" the share of images broken within epsilon."""

import time
import warnings
from typing import Any, Optional, Sequence

import numpy as np

from keras_gradreg import deprecation
from keras_gradreg import metrics as metrics_lib
from keras_gradreg import per_example
from keras_gradreg.attacks import registry
from keras_gradreg.attacks.judge import batches
from keras_gradreg.attacks.budgets import AttackBudget
from keras_gradreg.evaluation import inputs
from keras_gradreg.evaluation import epsilon_search
from keras_gradreg.evaluation import sanity
from keras_gradreg.evaluation.progress import in_batches
from keras_gradreg.evaluation.progress import progress_bar
from keras_gradreg.evaluation.reports import RobustnessReport


def _run_attack(attack_name, images, correct, budget, seed, progress, start) -> tuple:
    """One attack on every correctly classified image: (distances, examples, tolerance).
    `start`: per image, where its radius search begins (see epsilon_search.search)."""
    x, y, judge = images.x, images.y, images.judge
    distance = np.where(correct, np.inf, 0.0)
    examples = x.copy()
    tolerance = 0.0
    attack = registry.make_attack(attack_name, judge, budget, seed)

    def attack_batch(idx):
        if registry.ATTACKS[attack_name].minimises_distance:
            x_adv = np.asarray(attack(x[idx], y[idx], np.full(len(idx), np.inf)))
            ok, size = judge.verify(x_adv, x[idx], y[idx])
            return np.where(ok, size, np.inf), x_adv, np.zeros(len(idx))
        return epsilon_search.search(attack, judge, x[idx], y[idx], images.max_epsilon,
                                    budget.search_steps, budget.search_tolerance, start[idx])

    for idx, (dist, x_adv, width) in in_batches(attack_batch, np.flatnonzero(correct),
                                                 judge.batch_size, progress, images.workers):
        tolerance = max(tolerance, float(np.max(width, initial=0.0)))
        found = np.isfinite(dist).reshape((-1,) + (1,) * (x.ndim - 1))
        distance[idx], examples[idx] = dist, np.where(found, x_adv, x[idx])
    return distance, examples, tolerance


def _best_per_image(attacks, attack_distances, adversarial, x, correct) -> tuple:
    """(best distance, which attack found it, its example) per image."""
    table = (np.stack([attack_distances[a] for a in attacks]) if attacks
             else np.full((1, len(x)), np.inf))
    best = np.where(correct, table.min(axis=0), 0.0)
    winner = table.argmin(axis=0)
    best_attack = np.array(["clean" if not c else (attacks[w] if np.isfinite(b) else "none")
                            for c, w, b in zip(correct, winner, best)])
    best_examples = x.copy()
    for attack_name in attacks:
        chosen = best_attack == attack_name
        best_examples[chosen] = adversarial[attack_name][chosen]
    return best, best_attack, best_examples


def _lower_bounds(model, images: inputs.CheckedInputs, seconds: dict) -> np.ndarray:
    """Each image's L-bound (see metrics.LipschitzBound); its seconds go to `seconds`."""
    start = time.perf_counter()
    metric = metrics_lib.LipschitzBound(images.judge.attack_norm,
                                        from_logits=not images.probabilities,
                                        max_images=max(len(images.x), 1))
    for idx in batches(np.arange(len(images.x)), images.judge.batch_size):
        metric.update_from_model(model, images.x[idx], images.y[idx])
    seconds["lower_bound"] = time.perf_counter() - start
    return metric.per_image_bounds()[0].astype(np.float64)


def evaluate_robustness(
    model: Any,
    x: Any,
    y: Any = None,
    *,
    attack_norm: str = per_example.DEFAULT_ATTACK_NORM,
    epsilons: Optional[Sequence[float]] = None,
    attacks: Optional[Sequence[str]] = None,
    num_images: int = 1000,
    batch_size: int = 128,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int = 0,
    budget: AttackBudget = AttackBudget(),
    sanity_checks: bool = True,
    lower_bound: bool = True,
    name: Optional[str] = None,
    training_time: Optional[float] = None,
    workers: Optional[int] = None,
    top_k: int = 1,
    verbose: int = 1,
    **renamed: Any,
) -> RobustnessReport:
    """Attacks a classifier with every given attack and keeps each image's best one.

    Args:
      model: a Keras classifier (logits or softmax outputs), e.g. a GradRegModel.
      x: images with labels `y`, or a dataset of (image, label) elements or batches
        (its first `num_images` images).
      y: integer labels, (N,) or (N, 1), or one-hot, with array `x`.
      attack_norm: "linf" or "l2".
      epsilons: the radii of "% error at epsilon" (default: datasets.DEFAULT_EPSILONS).
      attacks: names from attacks.ATTACKS, or a set's name (attacks.SETS); default
        SETS["minimum_distance"], or SETS["top_k"] with top_k > 1.
      num_images: how many images; with arrays, a random subset chosen by `seed`.
      batch_size: images per attack call.
      clip_min: the data range's lowest value (examples stay in the range).
      clip_max: the data range's highest value.
      seed: seeds the choice of images and the attacks' randomness.
      budget: attack budgets (attacks.AttackBudget).
      sanity_checks: run the checks (evaluation.sanity, on CHECK_IMAGES images).
      lower_bound: also compute each image's L-bound.
      name: the model's name in reports (default: model.name).
      training_time: seconds, for the table.
      workers: batches attacked at once, in threads (evaluation.progress.workers).
      top_k: misclassified means the label outside the top k classes (5: ImageNet's
        top-5 error; only the attacks with `any_top_k` run; the L-bound stays top-1's).
      verbose: 1 shows a progress bar.
      **renamed: `settings`, the old name of `budget` (a DeprecationWarning).

    Returns:
      A RobustnessReport.

    Raises:
      ValueError: a bad argument, or images holding NaN/Inf, before any attack runs.
    """
    budget = deprecation.renamed_keyword("evaluate_robustness", renamed, "budget", budget,
                                         AttackBudget())
    images = inputs.prepare(
        model, x, y, protocol="minimum_distance",
        attacks=attacks, attack_norm=attack_norm, epsilons=epsilons, num_images=num_images,
        batch_size=batch_size, clip_min=clip_min, clip_max=clip_max, seed=seed,
        workers=workers, top_k=top_k)
    correct, seconds = ~images.judge.misclassified(images.x, images.y), {}
    progress = progress_bar(_batches_to_run(images, correct, sanity_checks), verbose,
                            "attack batch")
    attack_distances, adversarial, tolerance = _every_attack(images, correct, budget, seed,
                                                             progress, seconds)
    best, best_attack, best_examples = _best_per_image(images.attacks, attack_distances,
                                                       adversarial, images.x, correct)
    checks = _sanity_checks(images, correct, attack_distances, best, budget, progress,
                            seconds) if sanity_checks else []
    lower = _lower_bounds(model, images, seconds) if lower_bound else None
    return RobustnessReport(
        name=name or getattr(model, "name", "model"), attack_norm=attack_norm,
        epsilons=images.epsilons, distances=best, best_attack=best_attack,
        attack_distances=attack_distances, adversarial=best_examples, indices=images.indices,
        search_tolerance=tolerance, checks=checks, lower_bounds=lower,
        training_time=training_time, seconds=seconds, top_k=images.judge.top_k,
    )


def _sanity_checks(images, correct, attack_distances, best, budget, progress,
                   seconds: dict) -> list:
    """The sanity checks (sanity.run_checks), a warning for each that failed; their
    seconds go to `seconds`."""
    start = time.perf_counter()
    checks = sanity.run_checks(images, correct, attack_distances, best, budget, progress)
    seconds["sanity_checks"] = time.perf_counter() - start
    for check in checks:
        if not check.passed:
            warnings.warn(f"Sanity check {check.name!r} failed: {check.detail}", stacklevel=3)
    return checks


def _batches_to_run(images: inputs.CheckedInputs, correct: np.ndarray,
                    sanity_checks: bool) -> int:
    """The progress bar's length: every attack's batches of correct images, and the
    sanity checks' (PGD at each radius twice, Square on CHECK_IMAGES images)."""
    batch_size = images.judge.batch_size
    batches = -(-int(correct.sum()) // batch_size)
    square_batches = -(-int(correct[:sanity.CHECK_IMAGES].sum()) // batch_size) if (
        images.x.ndim == 4
        and not any(registry.ATTACKS[a].gradient_free for a in images.attacks)) else 0
    checks = 2 * len(images.epsilons) + square_batches if sanity_checks else 0
    return len(images.attacks) * batches + checks


def _every_attack(images: inputs.CheckedInputs, correct: np.ndarray, budget: AttackBudget,
                  seed: int, progress, seconds: dict) -> tuple:
    """Each attack in turn: ({attack: distances}, {attack: examples}, the searches' widest
    tolerance); each attack's seconds go to `seconds`. With `budget.warm_start` an
    attack's searches start from the best distance the earlier ones found."""
    attack_distances, adversarial, tolerance = {}, {}, 0.0
    so_far = np.full(len(images.x), np.inf)  # the best distance yet: where the next search starts
    for attack_name in images.attacks:
        start = time.perf_counter()
        attack_distances[attack_name], adversarial[attack_name], width = _run_attack(
            attack_name, images, correct, budget, seed, progress, so_far)
        seconds[attack_name] = time.perf_counter() - start
        tolerance = max(tolerance, width)
        if budget.warm_start:
            so_far = np.minimum(so_far, attack_distances[attack_name])
    return attack_distances, adversarial, tolerance
