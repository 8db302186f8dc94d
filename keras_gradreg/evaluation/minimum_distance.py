"""The paper's protocol (Finlay & Oberman, 2019): each image's smallest adversarial
distance over every attack, "% error at eps" the share of images broken within eps."""

import time
import warnings
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf

from keras_gradreg import penalty as penalty_lib
from keras_gradreg import metrics as metrics_lib
from keras_gradreg.attacks import registry
from keras_gradreg.attacks.judge import batches
from keras_gradreg.attacks.settings import AttackSettings
from keras_gradreg.evaluation import inputs
from keras_gradreg.evaluation import radius_search
from keras_gradreg.evaluation import sanity
from keras_gradreg.evaluation.progress import in_batches
from keras_gradreg.evaluation.progress import progress_bar
from keras_gradreg.evaluation.reports import RobustnessReport


def _run_attack(attack_name, images, correct, settings, seed, progress, start) -> tuple:
    """One attack on every correctly classified image: (distances, examples, tolerance).
    `start`: per image, where its radius search begins (see radius_search.search)."""
    x, y, judge = images.x, images.y, images.judge
    distance = np.where(correct, np.inf, 0.0)
    examples = x.copy()
    tolerance = 0.0
    attack = registry.make_attack(attack_name, judge, settings, seed)

    def attack_batch(idx):
        if registry.ATTACKS[attack_name].minimises_distance:
            x_adv = np.asarray(attack(x[idx], y[idx], np.full(len(idx), np.inf)))
            ok, size = judge.verify(x_adv, x[idx], y[idx])
            return np.where(ok, size, np.inf), x_adv, np.zeros(len(idx))
        return radius_search.search(attack, judge, x[idx], y[idx], images.max_eps,
                                    settings.search_steps, settings.search_tolerance, start[idx])

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


def _lower_bounds(model, x, y, attack_norm, probabilities, batch_size) -> np.ndarray:
    """Each image's L-bound (see metrics.LipschitzBound)."""
    metric = metrics_lib.LipschitzBound(attack_norm, from_logits=not probabilities,
                                        max_images=max(len(x), 1))
    for idx in batches(np.arange(len(x)), batch_size):
        metric.update_from_model(model, x[idx], y[idx])
    return metric.per_image_bounds()[0].numpy().astype(np.float64)


def evaluate_robustness(
    model: Any,
    x: Any,
    y: Any = None,
    *,
    attack_norm: str = penalty_lib.DEFAULT_ATTACK_NORM,
    epsilons: Optional[Sequence[float]] = None,
    attacks: Optional[Sequence[str]] = None,
    num_images: int = 1000,
    batch_size: int = 128,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int = 0,
    settings: AttackSettings = AttackSettings(),
    sanity_checks: bool = True,
    lower_bound: bool = True,
    name: Optional[str] = None,
    training_time: Optional[float] = None,
    workers: Optional[int] = None,
    top_k: int = 1,
    verbose: int = 1,
) -> RobustnessReport:
    """Attacks a classifier with every given attack and keeps each image's best one.

    Args:
      model: a Keras classifier (logits or softmax outputs), e.g. a GradRegModel.
      x: images (NumPy) with labels `y`, or a tf.data dataset of (image, label) elements
        or batches (its first `num_images` images are used: shuffle it yourself).
      y: integer labels, (N,) or (N, 1), or one-hot, with array `x`.
      attack_norm: "linf" or "l2".
      epsilons: radii for "% error at eps"; default data.DEFAULT_EPSILONS scaled to the range.
      attacks: names from attacks.ATTACKS, or the name of a set of attacks.SETS; default
        SETS["minimum_distance"] (AutoAttack's gradient attacks), SETS["top_k"] with
        top_k > 1.
      num_images: how many images; with arrays, a random subset chosen by `seed`.
      batch_size: images per attack call.
      clip_min: the data range's lowest value; adversarial examples stay in the range.
      clip_max: the data range's highest value.
      seed: seeds the choice of images and the attacks' randomness.
      settings: attack budgets (attacks.AttackSettings).
      sanity_checks: run the checks (on CHECK_IMAGES images: 3 PGD runs per radius and
        a Square run).
      lower_bound: also compute each image's L-bound.
      name: the model's name in reports (default: model.name).
      training_time: seconds, for the table.
      workers: batches attacked at the same time, each in a thread (None: 2 without a
        GPU, 1 with one; see evaluation.progress.workers). The results do not depend on it.
      top_k: the error measured: an image is misclassified when its label is outside the
        top k classes (1: top-1 error; 5: ImageNet's top-5 error, the paper's). With k > 1
        only the attacks that take any k run (attacks.ATTACKS' any_top_k), and the L-bound
        is that of top-1 misclassification, a lower bound on the top-k distance too.
      verbose: 1 shows a progress bar.

    Returns:
      A RobustnessReport.

    Raises:
      ValueError: a bad argument, or images holding NaN/Inf, before any attack runs.
    """
    images = inputs.prepare(
        "evaluate_robustness", model, x, y, protocol="minimum_distance",
        attacks=attacks, attack_norm=attack_norm, epsilons=epsilons, num_images=num_images,
        batch_size=batch_size, clip_min=clip_min, clip_max=clip_max, seed=seed,
        workers=workers, top_k=top_k)
    x, y, judge, attacks, epsilons = (images.x, images.y, images.judge, images.attacks,
                                      images.epsilons)
    batch_size = judge.batch_size
    tf.random.set_seed(seed)  # SPSA draws from TensorFlow's global generator
    correct = ~judge.misclassified(x, y)
    batches = -(-int(correct.sum()) // batch_size)
    square_batches = -(-int(correct[:sanity.CHECK_IMAGES].sum()) // batch_size) if (
        x.ndim == 4 and not any(registry.ATTACKS[a].gradient_free for a in attacks)) else 0
    progress = progress_bar(
        len(attacks) * batches + (2 * len(epsilons) + square_batches if sanity_checks else 0),
        verbose, "attack batch")

    attack_distances, adversarial, tolerance, seconds = {}, {}, 0.0, {}
    so_far = np.full(len(x), np.inf)  # the best distance yet: where the next search starts
    for attack_name in attacks:
        start = time.perf_counter()
        attack_distances[attack_name], adversarial[attack_name], width = _run_attack(
            attack_name, images, correct, settings, seed, progress, so_far)
        seconds[attack_name] = time.perf_counter() - start
        tolerance = max(tolerance, width)
        if settings.warm_start:
            so_far = np.minimum(so_far, attack_distances[attack_name])
    best, best_attack, best_examples = _best_per_image(attacks, attack_distances, adversarial,
                                                       x, correct)
    checks = []
    if sanity_checks:
        start = time.perf_counter()
        checks = sanity.run_checks(images, correct, attack_distances, best, settings, progress)
        seconds["sanity_checks"] = time.perf_counter() - start
        for check in checks:
            if not check.passed:
                warnings.warn(f"Sanity check {check.name!r} failed: {check.detail}", stacklevel=2)
    lower = None
    if lower_bound:
        start = time.perf_counter()
        lower = _lower_bounds(model, x, y, attack_norm, images.probabilities, batch_size)
        seconds["lower_bound"] = time.perf_counter() - start
    return RobustnessReport(
        name=name or getattr(model, "name", "model"), attack_norm=attack_norm,
        epsilons=epsilons, distances=best, best_attack=best_attack,
        attack_distances=attack_distances, adversarial=best_examples, indices=images.indices,
        search_tolerance=tolerance, checks=checks, lower_bounds=lower,
        training_time=training_time, seconds=seconds, top_k=judge.top_k,
    )
