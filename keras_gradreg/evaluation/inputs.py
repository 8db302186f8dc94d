"""The evaluations' arguments and data, checked before any attack runs."""

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np
from keras import ops

from keras_gradreg import backend
from keras_gradreg import datasets
from keras_gradreg import per_example
from keras_gradreg import validation
from keras_gradreg.attacks import ball
from keras_gradreg.attacks import registry
from keras_gradreg.attacks.judge import Judge
from keras_gradreg.attacks.judge import class_scores
from keras_gradreg.attacks.judge import compiled_for
from keras_gradreg.evaluation import progress

PROTOCOLS = {"minimum_distance": "minimum_distance", "autoattack": "standard"}
"""The protocols, with the set of attacks (attacks.registry.SETS) each runs by default:
minimum_distance, each image's smallest adversarial distance (the paper's table,
`evaluate_robustness`); autoattack, robust error at a radius under AutoAttack's cascade
(`evaluate_autoattack`, the protocol of RobustBench)."""


def check_attacks(attacks: Any, attack_norm: str, protocol: str = "minimum_distance",
                  top_k: int = 1) -> tuple:
    """The attacks a protocol is to run, or a ValueError naming a bad one.

    Args:
      attacks: names or a set's name (attacks.registry.SETS), or None for the protocol's
        default; the cascade runs AutoAttack's attacks only.
      attack_norm: "linf" or "l2".
      protocol: a key of PROTOCOLS.
      top_k: the error measured (top-k; the cascade measures top-1 only).
    """
    validation.check_choice("protocol", protocol, tuple(PROTOCOLS))
    top_k = validation.check_number("top_k", top_k, low=1, low_open=False, integer=True)
    if protocol == "autoattack" and top_k != 1:
        raise ValueError(f"top_k={top_k!r}: AutoAttack's cascade measures top-1 error; the "
                         "minimum-distance protocol (evaluate_robustness) measures top-k.")
    return registry.resolve(attacks, attack_norm, PROTOCOLS[protocol],
                                  autoattack_only=protocol == "autoattack", top_k=top_k)


def as_arrays(x: Any, y: Any, num_images: int) -> tuple:
    """(images, labels) as NumPy arrays, from arrays (NumPy's or the running backend's
    tensors; another backend's are refused by name) or from a tf.data dataset of (image,
    label) elements or batches (its first num_images images)."""
    if hasattr(x, "element_spec"):  # a tf.data dataset: TensorFlow is there already
        from keras_gradreg import data  # the pipelines' module, with TensorFlow

        if y is not None:
            raise ValueError("Pass labels inside the dataset ((image, label) elements), not as y.")
        spec = x.element_spec[0]
        elements = x.unbatch() if spec.shape.rank and spec.shape[0] is None else x
        return data.dataset_arrays(elements.take(num_images).batch(256))
    if y is None:
        raise ValueError("Labels y are required with array inputs.")
    backend.check_tensor("x", x)
    backend.check_tensor("y", y)
    return np.asarray(ops.convert_to_numpy(x)), np.asarray(ops.convert_to_numpy(y))


def check_data(attacks: Sequence[str], x: np.ndarray, y: np.ndarray, num_classes: int,
               clip_min: float, clip_max: float) -> None:
    """What the attacks need of the data (names and norms are checked by check_attacks)."""
    for name in attacks:
        registry.check_runs_on(name, num_classes, x.ndim)
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


def check_shape(model: Any, x: np.ndarray) -> None:
    """A ValueError, before the model is called, if x holds no images or images of
    another shape than the model's input."""
    if not len(x):
        raise ValueError(f"x holds no images (shape {x.shape}); pass at least one.")
    inputs = getattr(model, "inputs", None) or []
    expected = tuple(inputs[0].shape[1:]) if len(inputs) == 1 else None
    if expected is not None and (len(expected) != x.ndim - 1 or any(
            e is not None and e != got for e, got in zip(expected, x.shape[1:]))):
        raise ValueError(f"The model {getattr(model, 'name', '')!r} takes images of shape "
                         f"{expected}; x holds images of shape {x.shape[1:]}.")


@dataclasses.dataclass
class CheckedInputs:
    """The images an evaluation attacks, checked, and the judge of its attacks.

    Attributes:
      x: the chosen images, float32.
      y: their labels, int64, shape (N,).
      indices: their positions in the data given (sorted).
      judge: predicts and verifies on the model (see attacks.judge.Judge).
      attacks: the attacks' names, in order.
      epsilons: the radii, as floats, in the order given.
      max_epsilon: the largest distance within the data range (an unbounded attack).
      probabilities: whether the model outputs probabilities rather than logits.
      num_classes: how many classes it scores.
      workers: batches attacked at the same time (see progress.workers).
      given: earlier adversarial examples of the chosen images, if any were passed.
    """

    x: np.ndarray
    y: np.ndarray
    indices: np.ndarray
    judge: Judge
    attacks: tuple
    epsilons: tuple
    max_epsilon: float
    probabilities: bool
    num_classes: int
    workers: int
    given: Optional[np.ndarray] = None


def prepare(model: Any, x: Any, y: Any, *, protocol: str, attacks: Any,
            attack_norm: str, epsilons: Optional[Sequence[Any]], num_images: Any,
            batch_size: Any, clip_min: float, clip_max: float, seed: int,
            workers: Optional[int] = None, given: Optional[np.ndarray] = None,
            top_k: int = 1) -> CheckedInputs:
    """Checks every argument and the data, then chooses the images: the first step of
    both protocols, so that a bad value is named before any attack runs.

    Args:
      model: as for `evaluate_robustness`.
      x: as for `evaluate_robustness`.
      y: as for `evaluate_robustness`.
      protocol: a key of PROTOCOLS.
      attacks: as for `check_attacks`.
      attack_norm: "linf" or "l2".
      epsilons: the radii; None for datasets.DEFAULT_EPSILONS scaled to the data range (those
        within its largest distance).
      num_images: how many images; with arrays, a random subset chosen by `seed`.
      batch_size: images per attack call.
      clip_min: the data range's lowest value.
      clip_max: the data range's highest value.
      seed: chooses the images.
      workers: batches attacked at the same time (progress.workers).
      given: optionally, one earlier adversarial example per image of x.
      top_k: misclassified means the label outside the top k classes (1 <= k < classes).

    Returns:
      The CheckedInputs.
    """
    num_images = validation.check_number("num_images", num_images, low=1, low_open=False,
                                         integer=True)
    batch_size = validation.check_number("batch_size", batch_size, low=1, low_open=False,
                                         integer=True)
    workers = progress.workers(workers)
    attacks = check_attacks(attacks, attack_norm, protocol, top_k)
    backend.check_tensor("adversarial", given)
    x, y = as_arrays(x, y, num_images)
    check_shape(model, x)
    dims = int(np.prod(x.shape[1:]))
    largest = ball.max_epsilon(attack_norm, clip_min, clip_max, dims)
    if epsilons is None:  # the defaults that fit in the data range
        epsilons = [e * (clip_max - clip_min) for e in datasets.DEFAULT_EPSILONS[attack_norm]
                    if e * (clip_max - clip_min) <= largest]
    epsilons = ball.check_epsilons(epsilons, attack_norm, clip_min, clip_max, dims)
    model_fn, probabilities, num_classes = class_scores(model, x, batch_size)
    if top_k >= num_classes:
        raise ValueError(f"top_k={top_k} must be below the model's {num_classes} classes.")
    y = np.asarray(per_example.integer_labels(y, num_classes))
    check_data(attacks, x, y, num_classes, clip_min, clip_max)
    if given is not None and np.shape(given) != x.shape:
        raise ValueError(f"adversarial has shape {np.shape(given)}; pass one example per "
                         f"image of x, shape {x.shape}.")

    indices = np.sort(np.random.default_rng(seed).choice(len(x), min(num_images, len(x)),
                                                         replace=False))
    return CheckedInputs(
        x=x[indices].astype(np.float32), y=y[indices].astype(np.int64), indices=indices,
        judge=Judge(model_fn, clip_min, clip_max, batch_size, attack_norm, compiled_for(model),
                    top_k),
        attacks=attacks, epsilons=epsilons, max_epsilon=largest, probabilities=probabilities,
        num_classes=num_classes, workers=workers,
        given=None if given is None else np.asarray(given, np.float32)[indices])
