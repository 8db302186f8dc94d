"""Robustness evaluation as in Finlay & Oberman (2019): the best attack per image.

For each evaluated image the smallest adversarial distance found by ANY attack is kept
(0 for an image the model already misclassifies). "% error at eps" is the fraction of
images whose best distance is <= eps; the mean distance is the mean of the best
distances. Sanity checks after Carlini et al. (2019), "On Evaluating Adversarial
Robustness", run with every evaluation and warn when they fail.
"""

import csv
import dataclasses
import json
import numbers
import os
import sys
import time
import warnings
import weakref
from typing import Any, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf

from keras_gradreg import attacks as attacks_lib
from keras_gradreg import autoattack
from keras_gradreg import backend
from keras_gradreg import data as data_lib
from keras_gradreg import files
from keras_gradreg import metrics as metrics_lib
from keras_gradreg import validation

LOG_INTERVAL = 10.0
"""Seconds between progress lines when the output is not a terminal (a log file): a
bar redrawn in place on a terminal would otherwise write a line every 0.05 s."""


def progress_bar(target: int, verbose: int, unit_name: str) -> keras.utils.Progbar:
    """A Keras Progbar with an ETA: redrawn in place on a terminal; in a log, a new line
    every LOG_INTERVAL s (Keras redraws in place on every POSIX system, which leaves a log
    file one long line of backspaces)."""
    terminal = sys.stdout.isatty()
    bar = keras.utils.Progbar(target, verbose=verbose, interval=0.05 if terminal else LOG_INTERVAL,
                              unit_name=unit_name)
    bar._dynamic_display = terminal  # see backend.PRIVATE_KERAS_APIS
    return bar


PROTOCOLS = ("minimum_distance", "autoattack")
"""minimum_distance: each image's smallest adversarial distance (the paper's table,
`evaluate_robustness`); autoattack: robust error at a radius under AutoAttack's cascade
(`evaluate_autoattack`, the protocol of RobustBench)."""
DEFAULT_ATTACKS = {norm: ("apgd_ce", "apgd_dlr", "fab_t") for norm in ("linf", "l2")}
"""AutoAttack's gradient attacks with AttackSettings.autoattack's budget (SEARCH_BUDGET):
on the main job's three models (200 digits, 2026-12-01) at about the cost of CleverHans'
FGM, PGD and MIM (l_inf; FGM, PGD and CW for l2; the defaults before 0.3) and stronger on
every model, by up to 8 points of error at l_inf 0.3 and 17.5 at l2 3.0 (see the README)."""
ATTACK_SETS = {"autoattack": {"linf": ("apgd_ce", "apgd_dlr", "fab_t", "square"),
                              "l2": ("apgd_ce", "apgd_dlr", "fab_t", "square")}}
"""Named sets of attacks for `evaluate_robustness(attacks=NAME)`: AutoAttack's attacks
turned into minimum-distance ones (untargeted DLR in the radius search)."""
DEFAULT_EPSILONS = {"linf": (2 / 255, 8 / 255, 0.1, 0.3), "l2": (0.5, 1.0, 2.0)}
"""Radii for data in [0, 1]: the paper's CIFAR-10 l_inf radii and the usual MNIST ones."""

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


@dataclasses.dataclass
class SanityCheck:
    """One of the evaluation's sanity checks, its outcome, the value it judged and on how
    many images it ran (None: it attacked none, it reads the evaluation's results)."""

    name: str
    passed: bool
    detail: str
    value: Optional[float] = None
    images: Optional[int] = None


MASKING_CHECK = "gradient-free attack does not beat gradient attacks"
GIVEN = "given"
"""The stage of `evaluate_autoattack` that counts adversarial examples found earlier."""


@dataclasses.dataclass
class RobustnessReport:
    """What `evaluate_robustness` measured for one model.

    Attributes:
      name: the model's name in tables and plots.
      attack_norm: "linf" or "l2".
      epsilons: the radii reported in the table.
      distances: each image's best adversarial distance (0: misclassified already;
        inf: no attack succeeded), in the order of the evaluated images.
      best_attack: which attack found it, per image ("clean", an attack name, or "none").
      attack_distances: each attack's distances, per image.
      adversarial: the best adversarial example per image (the image where none).
      indices: positions of the evaluated images in the data given.
      search_tolerance: largest relative width of a final search bracket.
      checks: the sanity checks.
      lower_bounds: the L-bound per image, if computed (see metrics.LipschitzBound).
      training_time: seconds, if known.
      seconds: wall time of each attack, of the sanity checks and of the lower bound.
    """

    name: str
    attack_norm: str
    epsilons: tuple
    distances: np.ndarray
    best_attack: np.ndarray
    attack_distances: dict
    adversarial: np.ndarray
    indices: np.ndarray
    search_tolerance: float
    checks: list
    lower_bounds: Optional[np.ndarray] = None
    training_time: Optional[float] = None
    seconds: dict = dataclasses.field(default_factory=dict)

    def error_at(self, eps: float, images: Optional[Sequence[int]] = None) -> float:
        """Fraction of images whose best adversarial distance is <= eps.

        Args:
          eps: the radius.
          images: positions in the data given (as in `indices`) to count only those of;
            None counts every evaluated image. Each must have been evaluated.
        """
        if images is None:
            return float(np.mean(self.distances <= eps))
        wanted = np.asarray(images, int)
        if not wanted.size:
            raise ValueError("images=[] names no image; pass positions from report.indices, "
                             "or None for all.")
        missing = np.setdiff1d(wanted, self.indices)
        if missing.size:
            raise ValueError(f"images holds {missing.size} position(s) this report did not "
                             f"evaluate (first: {missing[:5].tolist()}); it evaluated the "
                             f"{len(self.indices)} in report.indices.")
        return float(np.mean(self.distances[np.isin(self.indices, wanted)] <= eps))

    @property
    def clean_error(self) -> float:
        return float(np.mean(self.distances == 0))

    @property
    def mean_distance(self) -> float:
        return float(np.mean(self.distances))

    @property
    def median_distance(self) -> float:
        return float(np.median(self.distances))

    @property
    def success_rates(self) -> dict:
        """Per attack, the fraction of correctly classified images it broke."""
        correct = self.distances > 0
        return {name: float(np.mean(np.isfinite(d[correct]))) if correct.any() else 0.0
                for name, d in self.attack_distances.items()}

    def to_dict(self) -> dict:
        """A JSON-serialisable summary, with per-image values (inf written as None)."""

        def finite(values):
            return [float(v) if np.isfinite(v) else None for v in np.asarray(values, float)]

        return {
            "name": self.name,
            "attack_norm": self.attack_norm,
            "num_images": int(len(self.distances)),
            "clean_error": self.clean_error,
            "error_at": {f"{eps:g}": self.error_at(eps) for eps in self.epsilons},
            "mean_distance": finite([self.mean_distance])[0],
            "median_distance": finite([self.median_distance])[0],
            "success_rates": self.success_rates,
            "search_tolerance": self.search_tolerance,
            "training_time_s": self.training_time,
            "seconds": self.seconds,
            "checks": [dataclasses.asdict(c) for c in self.checks],
            "images": {
                "index": [int(i) for i in self.indices],
                "distance": finite(self.distances),
                "best_attack": [str(a) for a in self.best_attack],
                "lower_bound": None if self.lower_bounds is None else finite(self.lower_bounds),
                **{f"distance_{name}": finite(d) for name, d in self.attack_distances.items()},
            },
        }


def _max_radius(attack_norm: str, clip_min: float, clip_max: float, dims: int) -> float:
    """The largest distance between two points of the data range: an unbounded attack."""
    span = clip_max - clip_min
    return span if attack_norm == "linf" else span * float(np.sqrt(dims))


def check_radii(epsilons: Sequence[Any], attack_norm: str, clip_min: float = 0.0,
                clip_max: float = 1.0, dims: Optional[int] = None) -> tuple:
    """The radii as floats, or a ValueError naming a bad one (not a number, NaN, <= 0, or
    beyond the largest distance in the data range: clip_max - clip_min for l_inf,
    that times sqrt(dims) for l2 when dims is known).
    """
    validation.check_choice("attack_norm", attack_norm, attacks_lib.ATTACK_NORMS)
    largest = (_max_radius(attack_norm, clip_min, clip_max, dims)
               if dims or attack_norm == "linf" else np.inf)
    hint = (f"({largest:g} is the largest {attack_norm} distance within the data range "
            f"[{clip_min}, {clip_max}])")
    radii = []
    for eps in epsilons:
        try:
            eps = float(eps) if isinstance(eps, str) else eps
        except ValueError:
            pass  # check_number names it
        radii.append(validation.check_number("epsilon", eps, high=largest, hint=hint))
    return tuple(radii)


def check_attack_names(attacks: Any, attack_norm: str,
                       protocol: str = "minimum_distance") -> tuple:
    """The attacks a protocol is to run, or a ValueError naming a bad one.

    Args:
      attacks: names; for "minimum_distance" also a named set of ATTACK_SETS, or None
        for DEFAULT_ATTACKS[attack_norm]; for "autoattack" None means its standard cascade.
      attack_norm: "linf" or "l2".
      protocol: one of PROTOCOLS.

    Returns:
      The names, in order.
    """
    validation.check_choice("attack_norm", attack_norm, attacks_lib.ATTACK_NORMS)
    validation.check_choice("protocol", protocol, PROTOCOLS)
    known = attacks_lib.ATTACKS if protocol == "minimum_distance" else autoattack.ATTACKS
    if attacks is None:
        names = (DEFAULT_ATTACKS[attack_norm] if protocol == "minimum_distance"
                 else autoattack.STANDARD)
    elif isinstance(attacks, str) and protocol == "minimum_distance":
        if attacks not in ATTACK_SETS:
            raise ValueError(f"attacks={attacks!r} is not a set of attacks; use one of "
                             f"{tuple(ATTACK_SETS)} or a list of names from {tuple(known)}.")
        names = ATTACK_SETS[attacks][attack_norm]
    elif isinstance(attacks, str) or not attacks:
        raise ValueError(f"attacks={attacks!r} must be a non-empty list of names from "
                         f"{tuple(known)}.")
    else:
        names = tuple(attacks)
    for name in names:
        validation.check_choice("attack", name, tuple(known))
        if attack_norm not in known[name]:
            raise ValueError(f"Attack {name!r} does not support attack_norm={attack_norm!r} (it "
                             f"supports {known[name]}).")
    return tuple(names)


def _as_arrays(x: Any, y: Any, num_images: int) -> tuple:
    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise ValueError("Pass labels inside the dataset ((image, label) elements), not as y.")
        spec = x.element_spec[0]
        elements = x.unbatch() if spec.shape.rank and spec.shape[0] is None else x
        return data_lib.dataset_arrays(elements.take(num_images).batch(256))
    if y is None:
        raise ValueError("Labels y are required with array inputs.")
    return np.asarray(x), np.asarray(y)


_COMPILED = weakref.WeakKeyDictionary()
"""Per model, the functions compiled on it: its logits and every attack built on them."""


def compiled_for(model: Any) -> dict:
    """The functions compiled on `model`, kept as long as the model lives, so that every
    evaluation of it (each protocol, each radius, the sanity checks) traces each attack
    once (see autoattack.traced_per_image_shape). They hold the model only weakly."""
    return _COMPILED.setdefault(model, {})


def _class_scores(model: Any, x: np.ndarray, batch_size: int) -> tuple:
    """(images -> float32 logits, whether the model outputs probabilities, classes), the
    function compiled once per model and image shape (see `compiled_for`)."""
    sample = np.asarray(model(x[:batch_size], training=False))
    if sample.ndim != 2 or sample.shape[1] < 2 or not np.issubdtype(sample.dtype, np.floating):
        raise ValueError(
            f"The model must output class scores of shape (batch, classes >= 2); it "
            f"returned shape {sample.shape}, dtype {sample.dtype}."
        )
    probabilities = bool(np.all(sample >= 0) and np.allclose(sample.sum(1), 1.0, atol=1e-3))
    key = ("logits", probabilities, tuple(x.shape[1:]))
    compiled = compiled_for(model)
    if key not in compiled:
        compiled[key] = _Logits(model, probabilities, x.shape[1:])
    return compiled[key], probabilities, sample.shape[1]


class _Logits:
    """images -> float32 logits of a model (log-probabilities for a softmax model, which
    differ by a per-image constant: the same attacks). Traced inline into the attacks'
    graphs; called directly (the verifications, hundreds of calls a model), a graph
    compiled once for any batch size: 2.3x an eager call (small CNN, 128 digits, 2 CPU
    cores). Holds the model weakly (it lives in `compiled_for(model)`)."""

    def __init__(self, model: Any, probabilities: bool, image_shape: tuple):
        self._model = weakref.ref(model)
        self._probabilities = probabilities
        self._compiled = tf.function(self._logits, input_signature=[
            tf.TensorSpec((None,) + tuple(image_shape), tf.float32)])

    def _logits(self, images):
        outputs = tf.cast(self._model()(images, training=False), tf.float32)
        return tf.math.log(tf.maximum(outputs, 1e-30)) if self._probabilities else outputs

    def __call__(self, images):
        return self._logits(images) if tf.inside_function() else self._compiled(images)


def _integer_labels(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Labels as (N,) integers, from (N,), (N, 1) or one-hot (N, classes)."""
    if y.ndim == 2 and y.shape[1] == num_classes:
        return y.argmax(axis=1)
    return y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y


def _validate(attacks, x, y, num_classes, clip_min, clip_max):
    """What the attacks need of the data (names and norms are checked by check_attack_names)."""
    for name in attacks:
        autoattack.check_classes(name, num_classes)
        if name == "square" and x.ndim != 4:
            raise ValueError(f"Attack 'square' needs images of shape (batch, height, width, "
                             f"channels); got shape {x.shape}.")
    bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
    if len(bad):
        raise ValueError(f"{len(bad)} image(s) hold NaN or Inf, the first at index {bad[0]}; "
                         "remove or repair them before attacking.")
    if x.min() < clip_min or x.max() > clip_max:
        raise ValueError(
            f"Images span [{x.min():g}, {x.max():g}], outside the declared range "
            f"[clip_min={clip_min}, clip_max={clip_max}]."
        )
    if len(y) != len(x):
        raise ValueError(f"{len(x)} images but {len(y)} labels.")
    if y.ndim != 1 or y.min() < 0 or y.max() >= num_classes:
        raise ValueError(
            f"Labels must be integers in [0, {num_classes}) of shape ({len(x)},) or "
            f"({len(x)}, 1), or one-hot; got shape {y.shape}, range [{y.min()}, {y.max()}]."
        )


@dataclasses.dataclass
class _Judge:
    """Predicts in batches and verifies adversarial examples: misclassified, in range and,
    where a radius is given, within it."""

    model_fn: Any
    clip_min: float
    clip_max: float
    batch_size: int
    cache: Optional[dict] = None  # see compiled_for

    def predict(self, images: np.ndarray) -> np.ndarray:
        return np.concatenate([np.argmax(self.model_fn(images[i:i + self.batch_size]), 1)
                               for i in range(0, len(images), self.batch_size)])

    def is_adversarial(self, x_adv: np.ndarray, labels: np.ndarray) -> np.ndarray:
        in_range = np.all((x_adv >= self.clip_min) & (x_adv <= self.clip_max),
                          axis=tuple(range(1, x_adv.ndim)))
        return in_range & (self.predict(x_adv) != labels)

    def breaks_within(self, x_adv: np.ndarray, x: np.ndarray, labels: np.ndarray, eps: Any,
                      attack_norm: str) -> np.ndarray:
        """Per image, whether x_adv is adversarial and within radius eps of x (up to
        float32 rounding, see autoattack.within_radius)."""
        size = attacks_lib.perturbation_norm(x_adv, x, attack_norm)
        return self.is_adversarial(x_adv, labels) & autoattack.within_radius(
            size, eps, attack_norm, x, self.clip_min, self.clip_max)


def _in_batches(fn, indices, batch_size, progress):
    """fn(batch) for each consecutive batch of `indices`; yields (batch, result) in
    order, advancing `progress` by one a batch."""
    for i in range(0, len(indices), batch_size):
        idx = indices[i:i + batch_size]
        result = fn(idx)
        progress.add(1)
        yield idx, result


def _run_attack(attack_name, judge, x, y, correct, attack_norm, settings, max_eps,
                num_classes, seed, progress) -> tuple:
    """One attack on every correctly classified image: (distances, examples, tolerance)."""
    distance = np.where(correct, np.inf, 0.0)
    examples = x.copy()
    tolerance = 0.0
    if attack_name == "cw":
        cw = attacks_lib.carlini_wagner(judge.model_fn, settings, judge.clip_min, judge.clip_max,
                                        num_classes)
        minimise = lambda images, labels: cw(tf.constant(images), tf.constant(labels))
    else:
        attack = attacks_lib.fixed_budget_attack(judge.model_fn, attack_name, attack_norm,
                                                 settings, judge.clip_min, judge.clip_max, seed,
                                                 judge.cache)
        minimise = lambda images, labels: attack(images, labels, np.full(len(images), np.inf))

    def attack_batch(idx):
        if attack_name in attacks_lib.MINIMUM_DISTANCE:
            x_adv = np.asarray(minimise(x[idx], y[idx]))
            ok = judge.is_adversarial(x_adv, y[idx])
            size = attacks_lib.perturbation_norm(x_adv, x[idx], attack_norm)
            return np.where(ok, size, np.inf), x_adv, np.zeros(len(idx))
        return attacks_lib.minimum_distance(attack, judge.is_adversarial, x[idx], y[idx],
                                            attack_norm, max_eps, settings.search_steps)

    for idx, (dist, x_adv, width) in _in_batches(attack_batch, np.flatnonzero(correct),
                                                 judge.batch_size, progress):
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
    for i in range(0, len(x), batch_size):
        metric.update_from_model(model, x[i:i + batch_size], y[i:i + batch_size])
    return metric.per_image_bounds()[0].numpy().astype(np.float64)


def evaluate_robustness(
    model: Any,
    x: Any,
    y: Any = None,
    *,
    attack_norm: str = "linf",
    epsilons: Optional[Sequence[float]] = None,
    attacks: Optional[Sequence[str]] = None,
    num_images: int = 1000,
    batch_size: int = 128,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int = 0,
    settings: attacks_lib.AttackSettings = attacks_lib.AttackSettings(),
    sanity_checks: bool = True,
    lower_bound: bool = True,
    name: Optional[str] = None,
    training_time: Optional[float] = None,
    verbose: int = 1,
) -> RobustnessReport:
    """Attacks a classifier with every given attack and keeps each image's best one.

    Args:
      model: a Keras classifier (logits or softmax outputs), e.g. a GradRegModel.
      x: images (NumPy) with labels `y`, or a tf.data dataset of (image, label) elements
        or batches (its first `num_images` images are used: shuffle it yourself).
      y: integer labels, (N,) or (N, 1), or one-hot, with array `x`.
      attack_norm: "linf" or "l2".
      epsilons: radii for "% error at eps"; default DEFAULT_EPSILONS scaled to the range.
      attacks: names from attacks.ATTACKS, or "autoattack" (ATTACK_SETS); default
        DEFAULT_ATTACKS[attack_norm].
      num_images: how many images; with arrays, a random subset chosen by `seed`.
      batch_size: images per attack call.
      clip_min, clip_max: the data range; adversarial examples stay in it.
      seed: seeds the choice of images and the attacks' randomness.
      settings: attack budgets (attacks.AttackSettings).
      sanity_checks: run the checks (on CHECK_IMAGES images: 3 PGD runs per radius and
        a Square run).
      lower_bound: also compute each image's L-bound.
      name: the model's name in reports (default: model.name).
      training_time: seconds, for the table.
      verbose: 1 shows a progress bar.

    Returns:
      A RobustnessReport.

    Raises:
      ValueError: a bad argument, or images holding NaN/Inf, before any attack runs.
    """
    backend.require_tensorflow("evaluate_robustness (CleverHans)")
    num_images = validation.check_number("num_images", num_images, low=1, low_open=False,
                                         integer=True)
    batch_size = validation.check_number("batch_size", batch_size, low=1, low_open=False,
                                         integer=True)
    attacks = check_attack_names(attacks, attack_norm)
    x, y = _as_arrays(x, y, num_images)
    model_fn, probabilities, num_classes = _class_scores(model, x, batch_size)
    y = _integer_labels(y, num_classes)
    dims = int(np.prod(x.shape[1:]))
    max_eps = _max_radius(attack_norm, clip_min, clip_max, dims)
    if epsilons is None:
        epsilons = [e * (clip_max - clip_min) for e in DEFAULT_EPSILONS.get(attack_norm, ())]
    epsilons = check_radii(epsilons, attack_norm, clip_min, clip_max, dims)
    _validate(attacks, x, y, num_classes, clip_min, clip_max)

    indices = np.sort(np.random.default_rng(seed).choice(len(x), min(num_images, len(x)),
                                                         replace=False))
    x, y = x[indices].astype(np.float32), y[indices].astype(np.int64)
    tf.random.set_seed(seed)
    judge = _Judge(model_fn, clip_min, clip_max, batch_size, compiled_for(model))
    correct = judge.predict(x) == y
    batches = -(-int(correct.sum()) // batch_size)
    square_batches = -(-int(correct[:CHECK_IMAGES].sum()) // batch_size) if (
        x.ndim == 4 and not set(attacks) & set(attacks_lib.GRADIENT_FREE)) else 0
    progress = progress_bar(
        len(attacks) * batches + (2 * len(epsilons) + square_batches if sanity_checks else 0),
        verbose, "attack batch")

    attack_distances, adversarial, tolerance, seconds = {}, {}, 0.0, {}
    for attack_name in attacks:
        start = time.perf_counter()
        attack_distances[attack_name], adversarial[attack_name], width = _run_attack(
            attack_name, judge, x, y, correct, attack_norm, settings, max_eps, num_classes, seed,
            progress)
        seconds[attack_name] = time.perf_counter() - start
        tolerance = max(tolerance, width)
    best, best_attack, best_examples = _best_per_image(attacks, attack_distances, adversarial,
                                                       x, correct)
    checks = []
    if sanity_checks:
        start = time.perf_counter()
        checks = _sanity_checks(judge, x, y, correct, attack_norm, epsilons, attack_distances,
                                best, max_eps, settings, progress)
        seconds["sanity_checks"] = time.perf_counter() - start
        for check in checks:
            if not check.passed:
                warnings.warn(f"Sanity check {check.name!r} failed: {check.detail}", stacklevel=2)
    lower = None
    if lower_bound:
        start = time.perf_counter()
        lower = _lower_bounds(model, x, y, attack_norm, probabilities, batch_size)
        seconds["lower_bound"] = time.perf_counter() - start
    return RobustnessReport(
        name=name or getattr(model, "name", "model"), attack_norm=attack_norm,
        epsilons=epsilons, distances=best, best_attack=best_attack,
        attack_distances=attack_distances, adversarial=best_examples, indices=indices,
        search_tolerance=tolerance, checks=checks, lower_bounds=lower,
        training_time=training_time, seconds=seconds,
    )


@dataclasses.dataclass
class AutoAttackReport:
    """What `evaluate_autoattack` measured for one model at one radius.

    Attributes:
      name: the model's name.
      attack_norm: "linf" or "l2".
      epsilon: the radius.
      attacks: the cascade's attacks, in order.
      broken_by: per image, "clean" (misclassified already), the attack that broke it,
        or "none" (robust).
      adversarial: per image, its verified adversarial example (the image where none).
      indices: positions of the evaluated images in the data given.
      robust_after: robust accuracy after each attack of the cascade.
      seconds: wall time of each attack.
      budget: the attacks' budgets.
    """

    name: str
    attack_norm: str
    epsilon: float
    attacks: tuple
    broken_by: np.ndarray
    adversarial: np.ndarray
    indices: np.ndarray
    robust_after: dict
    seconds: dict
    budget: autoattack.AutoAttackBudget = autoattack.STANDARD_BUDGET

    @property
    def clean_accuracy(self) -> float:
        return float(np.mean(self.broken_by != "clean"))

    @property
    def robust_accuracy(self) -> float:
        return float(np.mean(self.broken_by == "none"))

    @property
    def clean_error(self) -> float:
        return 1.0 - self.clean_accuracy

    @property
    def robust_error(self) -> float:
        """The fraction of images misclassified or broken within the radius."""
        return 1.0 - self.robust_accuracy

    def to_dict(self) -> dict:
        """A JSON-serialisable summary, with per-image results."""
        return {"name": self.name, "attack_norm": self.attack_norm, "epsilon": self.epsilon,
                "attacks": list(self.attacks), "num_images": int(len(self.broken_by)),
                "clean_accuracy": self.clean_accuracy, "robust_accuracy": self.robust_accuracy,
                "clean_error": self.clean_error, "robust_error": self.robust_error,
                "robust_after": self.robust_after, "seconds": self.seconds,
                "budget": dataclasses.asdict(self.budget),
                "images": {"index": [int(i) for i in self.indices],
                           "broken_by": [str(b) for b in self.broken_by]}}


def evaluate_autoattack(
    model: Any,
    x: Any,
    y: Any = None,
    *,
    epsilon: Union[float, Sequence[float]],
    attack_norm: str = "linf",
    attacks: Optional[Sequence[str]] = None,
    budget: autoattack.AutoAttackBudget = autoattack.STANDARD_BUDGET,
    num_images: int = 1000,
    batch_size: int = 128,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    seed: int = 0,
    name: Optional[str] = None,
    adversarial: Optional[np.ndarray] = None,
    verbose: int = 1,
) -> Union[AutoAttackReport, list]:
    """Robust accuracy under AutoAttack's cascade (Croce & Hein, ICML 2020) at a radius.

    Each attack runs only on the images every earlier one left unbroken; an image counts
    as broken when its example is misclassified, inside the data range and inside the
    radius (up to float32 rounding, see autoattack.within_radius), the protocol of
    RobustBench.

    Args:
      model: a Keras classifier (logits or softmax outputs).
      x, y: images and labels, or a dataset, as for `evaluate_robustness`.
      epsilon: the radius; or several, for one report each (in the order given). They
        run from the smallest, each attack built once, and an image broken within a
        smaller radius counts as broken within the larger ones by the same example
        (which lies inside their balls too): never weaker than separate calls, and cheaper.
      attack_norm: "linf" or "l2".
      attacks: names from autoattack.ATTACKS, in order (None: AutoAttack's "standard").
      budget: the attacks' budgets (autoattack.AutoAttackBudget; default "standard").
      num_images: how many images; with arrays, a random subset chosen by `seed`.
      batch_size: images per attack call.
      clip_min, clip_max: the data range.
      seed: seeds the choice of images and the attacks.
      name: the model's name (default: model.name).
      adversarial: optionally, adversarial examples found earlier, one per image of x
        (e.g. `RobustnessReport.adversarial` of the same images, whose distances the
        minimum-distance protocol verified). An image whose example is misclassified,
        in the data range and within the radius counts as broken by GIVEN, before the
        cascade, which then skips it: robust error of the cascade and the given examples
        together, never below the cascade's alone, and cheaper.
      verbose: 1 shows a progress bar per attack and radius.

    Returns:
      An AutoAttackReport, or a list of them for a sequence of radii; with `adversarial`,
      GIVEN is the first of its `attacks`.

    Raises:
      ValueError: a bad argument, before any attack runs.
    """
    backend.require_tensorflow("evaluate_autoattack")
    num_images = validation.check_number("num_images", num_images, low=1, low_open=False,
                                         integer=True)
    batch_size = validation.check_number("batch_size", batch_size, low=1, low_open=False,
                                         integer=True)
    attacks = check_attack_names(attacks, attack_norm, "autoattack")
    if not isinstance(budget, autoattack.AutoAttackBudget):
        raise ValueError(f"budget={budget!r} must be an autoattack.AutoAttackBudget.")
    several = not isinstance(epsilon, (numbers.Number, str))
    x, y = _as_arrays(x, y, num_images)
    model_fn, _, num_classes = _class_scores(model, x, batch_size)
    y = _integer_labels(y, num_classes)
    radii = check_radii(list(epsilon) if several else [epsilon], attack_norm, clip_min,
                        clip_max, int(np.prod(x.shape[1:])))
    _validate(attacks, x, y, num_classes, clip_min, clip_max)

    if adversarial is not None and np.shape(adversarial) != x.shape:
        raise ValueError(f"adversarial has shape {np.shape(adversarial)}; pass one example per "
                         f"image of x, shape {x.shape}.")

    indices = np.sort(np.random.default_rng(seed).choice(len(x), min(num_images, len(x)),
                                                         replace=False))
    x, y = x[indices].astype(np.float32), y[indices].astype(np.int64)
    judge = _Judge(model_fn, clip_min, clip_max, batch_size, compiled_for(model))
    stages = {attack_name: autoattack.make_attack(attack_name, model_fn, attack_norm, budget,
                                                  clip_min, clip_max, seed + 1000 * number,
                                                  judge.cache)
              for number, attack_name in enumerate(attacks)}
    run = {attack_name: lambda idx, eps, attack=attack: attack(x[idx], y[idx],
                                                               np.full(len(idx), eps))
           for attack_name, attack in stages.items()}
    if adversarial is not None:  # looked up by position, before the cascade
        given = np.asarray(adversarial, np.float32)[indices]
        run = {GIVEN: lambda idx, eps: given[idx], **run}
    broken_by = np.where(judge.predict(x) == y, "none", "clean").astype(object)
    examples = x.copy()
    reports = {}
    for eps in sorted(set(radii)):
        broken_by, examples = broken_by.copy(), examples.copy()
        robust_after, seconds = {}, {}
        for attack_name, attack in run.items():
            todo = np.flatnonzero(broken_by == "none")
            shown = verbose if attack_name != GIVEN else 0
            if shown:
                print(f"{attack_name} at {eps:g}: {len(todo)} images")
            progress = progress_bar(-(-len(todo) // batch_size), shown, "batch")
            start = time.perf_counter()

            def attack_batch(idx, attack=attack, eps=eps):
                x_adv = np.asarray(attack(idx, eps))
                return x_adv, judge.breaks_within(x_adv, x[idx], y[idx], eps, attack_norm)

            for idx, (x_adv, ok) in _in_batches(attack_batch, todo, batch_size, progress):
                broken_by[idx[ok]] = attack_name
                examples[idx[ok]] = x_adv[ok]
            seconds[attack_name] = time.perf_counter() - start
            robust_after[attack_name] = float(np.mean(broken_by == "none"))
        reports[eps] = AutoAttackReport(
            name=name or getattr(model, "name", "model"), attack_norm=attack_norm, epsilon=eps,
            attacks=tuple(run), broken_by=broken_by.astype(str), adversarial=examples,
            indices=indices, robust_after=robust_after, seconds=seconds, budget=budget)
    return [reports[eps] for eps in radii] if several else reports[radii[0]]


def _masking_check(judge, x, y, correct, attack_norm, epsilons, attack_distances, settings,
                   progress) -> Optional[SanityCheck]:
    """Whether a gradient-free attack breaks, at a radius of the table, images that every
    gradient attack left unbroken there: the mark of gradient masking.

    The gradient-free attacks of the evaluation are used if there are any (on every
    correctly classified image: their distances are known). Otherwise Square
    (settings.autoattack.square_queries queries) runs once on each correctly classified
    image of the first CHECK_IMAGES that every gradient attack left unbroken at some
    radius of the table, at the largest such radius (the likeliest to break it).
    None where there is nothing to compare (no gradient attack, no correct image, or
    no gradient-free attack and no (batch, height, width, channels) images for Square).
    """
    gradient = [d for a, d in attack_distances.items() if a not in attacks_lib.GRADIENT_FREE]
    free = [d for a, d in attack_distances.items() if a in attacks_lib.GRADIENT_FREE]
    checked = correct if free else correct & (np.arange(len(x)) < CHECK_IMAGES)
    if not gradient or not checked.any() or not (free or x.ndim == 4):
        return None
    best_gradient = np.min(gradient, axis=0)
    radii = np.sort(epsilons)
    # per image, the largest radius of the table below its best gradient distance (0: none)
    largest = np.concatenate([[0.0], radii])[np.searchsorted(radii, best_gradient, "left")]
    unbroken = np.flatnonzero(checked & (largest > 0))
    if free:
        beaten = np.min(free, axis=0)[unbroken] <= largest[unbroken]
        names = [a for a in attack_distances if a in attacks_lib.GRADIENT_FREE]
    else:
        square = autoattack.make_attack("square", judge.model_fn, attack_norm,
                                        settings.autoattack, judge.clip_min, judge.clip_max,
                                        cache=judge.cache)

        def square_batch(idx):
            x_adv = np.asarray(square(x[idx], y[idx], largest[idx]))
            return judge.breaks_within(x_adv, x[idx], y[idx], largest[idx], attack_norm)

        batches = -(-int(checked.sum()) // judge.batch_size)  # the progress bar's share
        beaten = np.concatenate([np.zeros(0, bool)] + [
            ok for _, ok in _in_batches(square_batch, unbroken, judge.batch_size, progress)])
        progress.add(batches - -(-len(unbroken) // judge.batch_size))
        names = ["square"]
    share = float(np.sum(beaten) / checked.sum())
    return SanityCheck(
        MASKING_CHECK, share <= GRADIENT_FREE_SHARE,
        f"{'/'.join(names)} broke {share:.3f} of the {int(checked.sum())} correctly classified "
        f"images it checked, at a radius where every gradient attack failed (a sign of "
        f"gradient masking above {GRADIENT_FREE_SHARE})", share, int(checked.sum()))


def _sanity_checks(judge, x, y, correct, attack_norm, epsilons, attack_distances, best, max_eps,
                   settings, progress) -> list:
    """The checks of Carlini et al. (2019) that this evaluation can run; the PGD checks on
    the first CHECK_IMAGES images."""
    checks = []
    subset = np.arange(min(CHECK_IMAGES, len(x)))

    def fixed_radius_error(attack_settings):
        attack = attacks_lib.fixed_budget_attack(judge.model_fn, "pgd", attack_norm,
                                                 attack_settings, judge.clip_min, judge.clip_max,
                                                 cache=judge.cache)
        errors = []
        for eps in epsilons:
            fooled = ~correct[subset]
            for i in range(0, len(subset), judge.batch_size):
                sl = slice(i, min(i + judge.batch_size, len(subset)))
                x_adv = np.asarray(attack(x[sl], y[sl], np.full(len(x[sl]), eps)))
                fooled[sl] |= judge.is_adversarial(x_adv, y[sl])
            errors.append(float(np.mean(fooled)))
            progress.add(1)
        return np.array(errors)

    order = np.argsort(epsilons)
    base = fixed_radius_error(settings)
    drops = np.diff(base[order])
    checks.append(SanityCheck(
        "error grows with epsilon", bool(np.all(drops >= 0)),
        f"PGD error on {len(subset)} images at "
        + ", ".join(f"{epsilons[i]:g}: {base[i]:.3f}" for i in order), images=len(subset),
    ))
    broken = np.mean(np.isfinite(best[correct])) if correct.any() else 1.0
    checks.append(SanityCheck(
        "unbounded attack succeeds", bool(broken >= UNBOUNDED_SUCCESS),
        f"{broken:.3f} of correctly classified images broken at radius {max_eps:g} "
        f"(expected >= {UNBOUNDED_SUCCESS})",
    ))
    masking = _masking_check(judge, x, y, correct, attack_norm, epsilons, attack_distances,
                             settings, progress)
    if masking is not None:
        checks.append(masking)
    doubled = fixed_radius_error(settings.doubled())
    rise = float(np.max(doubled - base)) if len(base) else 0.0
    checks.append(SanityCheck(
        "doubling PGD steps changes little", bool(rise <= MORE_STEPS_CHANGE),
        f"largest rise in error on {len(subset)} images with {2 * settings.steps} instead of "
        f"{settings.steps} steps: {rise:.3f} (allowed {MORE_STEPS_CHANGE})", images=len(subset),
    ))
    return checks


def render_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: the title, the header, a rule, the rows; columns padded."""
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([title] + lines)


def _masking_cell(report: RobustnessReport) -> str:
    """The gradient-masking check's share in percent, flagged when it failed; "-" if not run."""
    check = next((c for c in report.checks if c.name == MASKING_CHECK), None)
    if check is None:
        return "-"
    return f"{100 * check.value:.1f}" + ("" if check.passed else " FAILED")


def format_table(reports: Sequence[RobustnessReport]) -> str:
    """The paper's table: % clean error, % error at each radius, mean distance, hours,
    and the share of images a gradient-free attack broke where gradient attacks failed
    (the gradient-masking sanity check)."""
    epsilons = reports[0].epsilons
    header = (["model", "% clean error"] + [f"% error at {e:.4g}" for e in epsilons]
              + ["mean distance", "training time (h)", "% gradient-free wins"])
    rows = [[r.name, f"{100 * r.clean_error:.2f}"] + [f"{100 * r.error_at(e):.2f}" for e in epsilons]
            + [f"{r.mean_distance:.3e}",
               "-" if r.training_time is None else f"{r.training_time / 3600:.3g}",
               _masking_cell(r)]
            for r in reports]
    first = reports[0]
    return render_table(f"{first.attack_norm} attacks ({', '.join(first.attack_distances)}), "
                        f"best attack per image, {len(first.distances)} images", header, rows)


def format_autoattack_table(reports: Sequence[AutoAttackReport],
                            minimum_distance_error: Optional[Sequence[float]] = None) -> str:
    """One row per report (model and radius): % clean and robust error, the robust error
    left after each attack of the cascade, and the seconds it took.

    Args:
      reports: the AutoAttack reports.
      minimum_distance_error: optionally, per report, the minimum-distance protocol's
        error at the same radius on the same images (`RobustnessReport.error_at(eps,
        images=...)`), shown beside it: AutoAttack below it means the cascade missed
        examples the other attacks found.
    """
    if minimum_distance_error is not None and len(minimum_distance_error) != len(reports):
        raise ValueError(f"minimum_distance_error holds {len(minimum_distance_error)} values for "
                         f"{len(reports)} reports; pass one per report, in their order.")
    attacks = reports[0].attacks
    extra = [] if minimum_distance_error is None else ["% minimum-distance error, same images"]
    header = (["model", "radius", "% clean error", "% robust error"] + extra
              + [f"% after {a}" for a in attacks] + ["seconds"])
    rows = [[r.name, f"{r.epsilon:.4g}", f"{100 * r.clean_error:.2f}",
             f"{100 * r.robust_error:.2f}"]
            + ([] if minimum_distance_error is None else [f"{100 * minimum_distance_error[i]:.2f}"])
            + [f"{100 - 100 * r.robust_after[a]:.2f}" for a in attacks]
            + [f"{sum(r.seconds.values()):.0f}"] for i, r in enumerate(reports)]
    first = reports[0]
    budget = "" if first.budget == autoattack.STANDARD_BUDGET else f", budget {first.budget}"
    given = (f", counting first the {GIVEN} examples (verified within the radius)"
             if GIVEN in attacks else "")
    return render_table(f"AutoAttack ({', '.join(a for a in attacks if a != GIVEN)}), "
                        f"{first.attack_norm}, {len(first.broken_by)} images{budget}{given} "
                        "(robust accuracy = 100 - robust error)", header, rows)


RESULT_FILES = {"json": "results.json", "csv": "results.csv", "plot": "error_vs_distance.png"}
AUTOATTACK_FILE = "autoattack.json"


def existing_results(output_dir: str, protocol: str = "minimum_distance") -> list:
    """The result files of a protocol already in output_dir (check before a long evaluation)."""
    names = RESULT_FILES.values() if protocol == "minimum_distance" else [AUTOATTACK_FILE]
    return files.existing(output_dir, names)


def write_autoattack_results(reports: Sequence[AutoAttackReport], output_dir: str,
                             overwrite: bool = False) -> str:
    """Writes autoattack.json into output_dir, whole or not at all; refuses to replace
    an existing one unless `overwrite`. Returns its path."""
    path = os.path.join(output_dir, AUTOATTACK_FILE)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to "
                              "replace it, or choose another output directory.")
    os.makedirs(output_dir, exist_ok=True)
    files.write_text(path, json.dumps([r.to_dict() for r in reports], indent=1))
    return path


def write_results(reports: Sequence[RobustnessReport], output_dir: str,
                  overwrite: bool = False) -> dict:
    """Writes results.json, results.csv and error_vs_distance.png into output_dir.

    Refuses, before writing anything, to replace existing result files unless
    `overwrite` is set. The three are replaced as one set (files.replaced_together): a
    kill at any moment leaves the old three or the new three.

    Returns:
      The paths written, by kind.
    """
    from keras_gradreg import plotting  # matplotlib is imported only when plotting

    paths = {kind: os.path.join(output_dir, name) for kind, name in RESULT_FILES.items()}
    files.refuse_to_replace(existing_results(output_dir), overwrite)
    os.makedirs(output_dir, exist_ok=True)
    with files.replaced_together(list(paths.values())) as (json_path, csv_path, plot_path):
        with open(json_path, "w") as f:
            json.dump([r.to_dict() for r in reports], f, indent=1)
        with open(csv_path, "w", newline="") as f:
            writer = csv.writer(f)
            epsilons = reports[0].epsilons
            writer.writerow(["model", "attack_norm", "clean_error"]
                            + [f"error_at_{e:g}" for e in epsilons]
                            + ["mean_distance", "median_distance", "training_time_s"])
            for r in reports:
                writer.writerow([r.name, r.attack_norm, r.clean_error]
                                + [r.error_at(e) for e in epsilons]
                                + [r.mean_distance, r.median_distance, r.training_time])
        plotting.plot_error_curves(reports, plot_path)
    return paths
