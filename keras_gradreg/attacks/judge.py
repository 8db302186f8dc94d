"""The model as the attacks see it (float32 logits, compiled once per model and image
shape) and the judge that verifies every adversarial example they return: misclassified
(the label outside the top k classes: top-1 by default, top-5 for ImageNet's protocol),
inside the data range and, where a radius is given, within it. Every protocol, search
and attack counts an example as adversarial here (`fooled` inside the attacks' graphs,
`Judge.verify` on what they return), and nowhere else."""

import dataclasses
import weakref
from typing import Any, Optional

import numpy as np
from keras import ops

from keras_gradreg import backend
from keras_gradreg.attacks import ball


_COMPILED = weakref.WeakKeyDictionary()
"""Per model, the functions compiled on it: its logits and every attack built on them."""


def compiled_for(model: Any) -> dict:
    """The functions compiled on `model`, kept as long as the model lives, so that every
    evaluation of it (each protocol, each radius, the sanity checks) compiles each attack
    once per shape (see registry.make_attack). They hold the model only weakly."""
    return _COMPILED.setdefault(model, {})


def class_scores(model: Any, x: np.ndarray, batch_size: int) -> tuple:
    """(images -> float32 logits, whether the model outputs probabilities, classes), the
    function compiled once per model and image shape (see `compiled_for`)."""
    sample = ops.convert_to_numpy(model(x[:batch_size], training=False))
    if sample.ndim != 2 or sample.shape[1] < 2 or not np.issubdtype(sample.dtype, np.floating):
        raise ValueError(
            f"The model must output class scores of shape (batch, classes >= 2); it "
            f"returned shape {sample.shape}, dtype {sample.dtype}."
        )
    probabilities = bool(np.all(sample >= 0) and np.allclose(sample.sum(1), 1.0, atol=1e-3))
    key = ("logits", probabilities)
    compiled = compiled_for(model)
    if key not in compiled:
        compiled[key] = _Logits(model, probabilities)
    return compiled[key], probabilities, sample.shape[1]


class _Logits:
    """images -> float32 logits of a model (log-probabilities for a softmax model, which
    differ by a per-image constant: the same attacks). Inline inside an attack's compiled
    function; called directly (the verifications, hundreds of calls a model), compiled
    by the backend (docs/cost.md). Holds the model weakly (it lives in
    `compiled_for(model)`)."""

    def __init__(self, model: Any, probabilities: bool):
        self._model = weakref.ref(model)
        self._probabilities = probabilities
        self._compiled = backend.current().compiled(self._logits)

    def _logits(self, images):
        outputs = ops.cast(self._model()(images, training=False), "float32")
        return ops.log(ops.maximum(outputs, 1e-30)) if self._probabilities else outputs

    def __call__(self, images, training: bool = False):
        """The logits (a model called in inference mode: `training` must be False)."""
        if training:
            raise ValueError("The attacks' view of a model runs in inference mode only.")
        if backend.current().in_trace(images):
            return self._logits(images)
        return self._compiled(ops.convert_to_tensor(images, "float32"))


def fooled(logits: Any, y: Any, top_k: int = 1) -> Any:
    """Per image, whether the label is outside the `top_k` highest-scoring classes: for
    top_k = 1, whether the argmax is another class; for k > 1, whether at least k other
    classes score strictly higher than the label."""
    logits, y = ops.convert_to_tensor(logits), ops.cast(y, "int32")
    if top_k == 1:
        return ops.not_equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), y)
    label = ops.take_along_axis(logits, ops.reshape(y, (-1, 1)), axis=1)
    higher = ops.sum(ops.cast(logits > label, "int32"), axis=-1)
    return higher >= top_k


def batches(indices: np.ndarray, batch_size: int) -> list:
    """Consecutive slices of `indices`, batch_size at a time (the last one shorter)."""
    return [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]


@dataclasses.dataclass
class Judge:
    """Predicts in batches and verifies adversarial examples (see `verify`).

    Attributes:
      model_fn: images -> float32 logits (see `class_scores`).
      clip_min: the data range's lowest value.
      clip_max: the data range's highest value.
      batch_size: images per call of the model or an attack.
      attack_norm: the norm radii are measured in.
      cache: the functions compiled on the model (see `compiled_for`).
      top_k: an image is misclassified when its label is outside the top k classes.
    """

    model_fn: Any
    clip_min: float
    clip_max: float
    batch_size: int
    attack_norm: str
    cache: Optional[dict] = None
    top_k: int = 1

    def misclassified(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Per image, whether its label is outside the model's top `top_k` classes."""
        return np.concatenate([ops.convert_to_numpy(fooled(self.model_fn(images[idx]),
                                                           labels[idx], self.top_k))
                               for idx in batches(np.arange(len(images)), self.batch_size)]
                              or [np.zeros(0, bool)])

    def verify(self, x_adv: np.ndarray, x: np.ndarray, labels: np.ndarray,
               epsilon: Any = None) -> tuple:
        """(whether each x_adv is adversarial, its distance to x): misclassified (see
        `misclassified`), inside the data range and, with `epsilon` (one radius or one per
        image), within it up to float32 rounding (ball.within_epsilon)."""
        size = ball.perturbation_size(x_adv, x, self.attack_norm)
        in_range = np.all((x_adv >= self.clip_min) & (x_adv <= self.clip_max),
                          axis=tuple(range(1, x_adv.ndim)))
        ok = in_range & self.misclassified(x_adv, labels)
        if epsilon is not None:
            ok &= ball.within_epsilon(size, epsilon, self.attack_norm, x.shape[1:], self.clip_min,
                                     self.clip_max)
        return ok, size
