"""The evaluations' arguments and data, checked before any attack runs."""

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf

from keras_gradreg import attacks as attacks_lib
from keras_gradreg import autoattack
from keras_gradreg import backend
from keras_gradreg import data as data_lib
from keras_gradreg import primitives
from keras_gradreg import validation
from keras_gradreg.evaluation.judge import Judge
from keras_gradreg.evaluation.judge import class_scores
from keras_gradreg.evaluation.judge import compiled_for


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
DEFAULT_EPSILONS = data_lib.DEFAULT_RADII
"""Radii for data in [0, 1] when none are given: every dataset's (data.DEFAULT_RADII)."""


def check_radii(epsilons: Sequence[Any], attack_norm: str, clip_min: float = 0.0,
                clip_max: float = 1.0, dims: Optional[int] = None) -> tuple:
    """The radii as floats, or a ValueError naming a bad one (not a number, NaN, <= 0, or
    beyond the largest distance in the data range: clip_max - clip_min for l_inf,
    that times sqrt(dims) for l2 when dims is known).
    """
    validation.check_choice("attack_norm", attack_norm, primitives.BALL_NORMS)
    largest = (primitives.max_radius(attack_norm, clip_min, clip_max, dims)
               if dims or attack_norm == "linf" else np.inf)
    hint = (f"({largest:g} is the largest {attack_norm} distance within the data range "
            f"[{clip_min}, {clip_max}])")
    if isinstance(epsilons, str) or not len(epsilons):
        raise ValueError(f"epsilons={epsilons!r} names no radius; pass one or more numbers.")
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
    validation.check_choice("attack_norm", attack_norm, primitives.BALL_NORMS)
    validation.check_choice("protocol", protocol, PROTOCOLS)
    known = attacks_lib.ATTACKS if protocol == "minimum_distance" else autoattack.CASCADE_ATTACKS
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


def as_arrays(x: Any, y: Any, num_images: int) -> tuple:
    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise ValueError("Pass labels inside the dataset ((image, label) elements), not as y.")
        spec = x.element_spec[0]
        elements = x.unbatch() if spec.shape.rank and spec.shape[0] is None else x
        return data_lib.dataset_arrays(elements.take(num_images).batch(256))
    if y is None:
        raise ValueError("Labels y are required with array inputs.")
    return np.asarray(x), np.asarray(y)


def integer_labels(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Labels as (N,) integers, from (N,), (N, 1) or one-hot (N, classes)."""
    if y.ndim == 2 and y.shape[1] == num_classes:
        return y.argmax(axis=1)
    return y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y


def check_data(attacks, x, y, num_classes, clip_min, clip_max):
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
class Evaluated:
    """The images an evaluation attacks, checked, and the judge of its attacks.

    Attributes:
      x: the chosen images, float32.
      y: their labels, int64, shape (N,).
      indices: their positions in the data given (sorted).
      judge: predicts and verifies on the model (see judge.Judge).
      attacks: the attacks' names, in order.
      radii: the radii, as floats, in the order given.
      max_eps: the largest distance within the data range (an unbounded attack).
      probabilities: whether the model outputs probabilities rather than logits.
      num_classes: how many classes it scores.
      given: earlier adversarial examples of the chosen images, if any were passed.
    """

    x: np.ndarray
    y: np.ndarray
    indices: np.ndarray
    judge: Judge
    attacks: tuple
    radii: tuple
    max_eps: float
    probabilities: bool
    num_classes: int
    given: Optional[np.ndarray] = None


def prepare(caller: str, model: Any, x: Any, y: Any, *, protocol: str, attacks: Any,
            attack_norm: str, radii: Optional[Sequence[Any]], num_images: Any, batch_size: Any,
            clip_min: float, clip_max: float, seed: int,
            given: Optional[np.ndarray] = None) -> Evaluated:
    """Checks every argument and the data, then chooses the images: the first step of
    both protocols, so that a bad value is named before any attack runs.

    Args:
      caller: the public function, named in the backend's error.
      model, x, y: as for `evaluate_robustness`.
      protocol: one of PROTOCOLS.
      attacks: as for `check_attack_names`.
      attack_norm: "linf" or "l2".
      radii: the radii; None for DEFAULT_EPSILONS scaled to the data range (those within
        its largest distance).
      num_images: how many images; with arrays, a random subset chosen by `seed`.
      batch_size: images per attack call.
      clip_min, clip_max: the data range.
      seed: chooses the images.
      given: optionally, one earlier adversarial example per image of x.

    Returns:
      The Evaluated images.
    """
    backend.require_tensorflow(caller)
    num_images = validation.check_number("num_images", num_images, low=1, low_open=False,
                                         integer=True)
    batch_size = validation.check_number("batch_size", batch_size, low=1, low_open=False,
                                         integer=True)
    attacks = check_attack_names(attacks, attack_norm, protocol)
    x, y = as_arrays(x, y, num_images)
    model_fn, probabilities, num_classes = class_scores(model, x, batch_size)
    y = integer_labels(y, num_classes)
    dims = int(np.prod(x.shape[1:]))
    largest = primitives.max_radius(attack_norm, clip_min, clip_max, dims)
    if radii is None:  # the defaults that fit in the data range
        radii = [e * (clip_max - clip_min) for e in DEFAULT_EPSILONS[attack_norm]
                 if e * (clip_max - clip_min) <= largest]
    radii = check_radii(radii, attack_norm, clip_min, clip_max, dims)
    check_data(attacks, x, y, num_classes, clip_min, clip_max)
    if given is not None and np.shape(given) != x.shape:
        raise ValueError(f"adversarial has shape {np.shape(given)}; pass one example per "
                         f"image of x, shape {x.shape}.")

    indices = np.sort(np.random.default_rng(seed).choice(len(x), min(num_images, len(x)),
                                                         replace=False))
    return Evaluated(
        x=x[indices].astype(np.float32), y=y[indices].astype(np.int64), indices=indices,
        judge=Judge(model_fn, clip_min, clip_max, batch_size, compiled_for(model)),
        attacks=attacks, radii=radii, max_eps=largest,
        probabilities=probabilities, num_classes=num_classes,
        given=None if given is None else np.asarray(given, np.float32)[indices])
