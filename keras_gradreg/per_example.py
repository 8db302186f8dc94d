"""The ground floor: what every other module says of a batch, example by example.

The norms by name and their duals, norms of each example, the input as a float and
losses in float32 at least, per-example losses from Keras losses, integer labels, an
example's entries flattened into one row, and the record of a clean pass (the loss and
its input gradient, which each backend module takes). It imports nothing from the
package but `validation`, so that every other module can import it.
"""

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence

import keras
import numpy as np
from keras import ops

from keras_gradreg import validation

NORM_ORDERS = {"linf": math.inf, "l2": 2, "l1": 1}
"""Every norm by name, with its order p: the one list of them."""
ATTACK_NORMS = tuple(NORM_ORDERS)
"""The norms an attacker can be measured in (`attack_norm` everywhere)."""
DUAL_NORMS = {"linf": "l1", "l2": "l2", "l1": "linf"}
"""The dual of each attack norm: the input-gradient norm that bounds the loss's change
within the attacker's ball (against l_inf attacks, the paper's l1 penalty)."""
DEFAULT_ATTACK_NORM = "linf"
"""The attack norm when none is given, everywhere (GradRegModel, the penalty functions,
adversarial training, the bounds, the scripts): the paper's squared l1 penalty."""

LossFn = Callable[[Any, Any], Any]
"""A per-example loss: (y_true, y_pred) -> values of shape (batch,)."""


def check_attack_norm(attack_norm: str, allowed: Sequence[str] = ATTACK_NORMS) -> str:
    """Returns attack_norm; a ValueError naming it and the allowed norms otherwise."""
    return validation.check_choice("attack_norm", attack_norm, allowed)


def broadcast(values: Any, like: Any) -> Any:
    """Per-example values, shape (batch,), as (batch, 1, ..., 1) to scale tensors like `like`."""
    return ops.reshape(values, (-1,) + (1,) * (len(like.shape) - 1))


def norm(t: Any, which: str) -> Any:
    """Per-example ||t|| over every axis but the first: max |t_j| ("linf"), sqrt(sum t_j^2)
    ("l2") or sum |t_j| ("l1").

    Written out rather than with keras.ops.norm, which returns float32 for float64
    input on JAX (Keras 3.15).
    """
    validation.check_choice("norm", which, ATTACK_NORMS)
    axes = tuple(range(1, len(t.shape)))
    if which == "linf":
        return ops.max(ops.abs(t), axis=axes)
    if which == "l1":
        return ops.sum(ops.abs(t), axis=axes)
    return ops.sqrt(ops.sum(ops.square(t), axis=axes))


def dual_norm(g: Any, attack_norm: str) -> Any:
    """Per-example ||g||_*, the dual of the attack norm, of gradients (batch, ...)."""
    return norm(g, DUAL_NORMS[check_attack_norm(attack_norm)])


def as_float(x: Any) -> Any:
    """The input as a float tensor: integer pixels are cast to floatx, floats kept."""
    x = ops.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if keras.backend.is_float_dtype(dtype):
        return x
    if keras.backend.is_int_dtype(dtype) or dtype == "bool":
        return ops.cast(x, keras.backend.floatx())
    raise TypeError(
        f"Input of dtype {dtype} cannot be perturbed: input-gradient "
        "regularisation needs float (or integer pixel) inputs."
    )


def at_least_float32(t: Any) -> Any:
    """Casts float16/bfloat16 (mixed precision) up to float32; keeps float32/64."""
    t = ops.convert_to_tensor(t)
    return t if keras.backend.standardize_dtype(t.dtype) in ("float32", "float64") \
        else ops.cast(t, "float32")


def check_numeric_labels(y: Any) -> None:
    """A ValueError naming the dtype of labels that are not numbers (NumPy arrays and
    lists; tensors are numeric already)."""
    if isinstance(y, (np.ndarray, list, tuple)) and np.asarray(y).dtype.kind not in "biuf":
        raise ValueError(f"Labels of dtype {np.asarray(y).dtype} are not class indices; pass "
                         "integer labels of shape (N,) or (N, 1), or one-hot (N, classes).")


def integer_labels(y: Any, num_classes: int) -> Any:
    """Labels as (batch,) integers, from (batch,), (batch, 1) or one-hot (batch, classes)."""
    check_numeric_labels(y)
    y = ops.convert_to_tensor(y)
    if len(y.shape) == 2 and y.shape[1] == num_classes and num_classes > 1:
        y = ops.argmax(y, axis=-1)
    return ops.reshape(y, (-1,))


def require_targets(y: Any) -> None:
    """Raises ValueError if y is None: an input gradient of a loss needs targets."""
    if y is None:
        raise ValueError("The penalty is the input gradient of the loss, which needs "
                         "targets: pass y (fit(x, y), or a dataset of (x, y) pairs).")


def _unreduced(loss: Any) -> Callable:
    """A Keras loss (name, object or function) as a function without reduction."""
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        return loss.call
    if callable(loss):
        return loss
    raise TypeError(
        f"loss={loss!r} is not a Keras loss: pass a loss name, a keras.losses.Loss or a "
        "callable (y_true, y_pred) -> per-example values (a list of them for a "
        "multi-output model)."
    )


def _one_loss(fn: Callable, loss: Any, y_true: Any, y_pred: Any) -> Any:
    """fn's values per example, in float32 at least, averaged over axes past the batch."""
    values = at_least_float32(fn(y_true, at_least_float32(y_pred)))
    if len(values.shape) == 0:
        raise ValueError(f"The loss {loss!r} returned a scalar; the penalty needs one value "
                         "per example (use reduction=None or a loss name).")
    if len(values.shape) > 1:
        values = ops.mean(values, axis=tuple(range(1, len(values.shape))))
    return values


def loss_fn(loss: Any, loss_weights: Optional[Sequence[float]] = None) -> LossFn:
    """Turns a Keras loss (name, object or function, or one per output) into a per-example one.

    Args:
      loss: a loss name such as "sparse_categorical_crossentropy", a
        `keras.losses.Loss` instance (its reduction is ignored), a callable
        `(y_true, y_pred) -> tensor` whose first axis is the batch, or a list of those,
        one per model output. A single loss on a multi-output model applies to every
        output, as in `keras.Model.compile`.
      loss_weights: optional weight per output (as `compile(loss_weights=[...])`).

    Returns:
      A function `(y_true, y_pred) -> (batch,)` tensor: the weighted sum over outputs,
      computed in float32 (or float64 for a float64 model) even under mixed precision.
      Values with more axes than the batch are averaged over them, as Keras'
      "sum_over_batch_size" does, so the mean over the batch is Keras' compiled loss.
    """
    if isinstance(loss, dict):
        raise TypeError("A dict of losses is keyed by output names; pass a list in the order "
                        "of the model's outputs (GradRegModel does this for you).")
    fns = [_unreduced(f) for f in (loss if isinstance(loss, (list, tuple)) else [loss])]

    def fn(y_true, y_pred):
        require_targets(y_true)
        outputs, targets = keras.tree.flatten(y_pred), keras.tree.flatten(y_true)
        per_output = fns * len(outputs) if len(fns) == 1 else fns
        weights = [1.0] * len(outputs) if loss_weights is None else list(loss_weights)
        if not len(per_output) == len(targets) == len(weights) == len(outputs):
            raise ValueError(
                f"The model has {len(outputs)} output(s) but got {len(targets)} target(s), "
                f"{len(fns)} loss(es) and {len(weights)} loss weight(s); give one target per "
                "output, and one loss (for all outputs) or one per output."
            )
        total = [float(w) * _one_loss(f, loss, t, o)
                 for f, t, o, w in zip(per_output, targets, outputs, weights)]
        return sum(total[1:], total[0])

    return fn


def flatten(tensors: Sequence[Any]) -> Any:
    """Concatenates the entries of each example over all tensors: (batch, N)."""
    batch = ops.shape(tensors[0])[0]
    flat = [ops.reshape(t, (batch, -1)) for t in tensors]
    return flat[0] if len(flat) == 1 else ops.concatenate(flat, axis=1)


def unflatten(flat: Any, like: Sequence[Any]) -> list:
    """Splits (batch, N) back into tensors shaped like `like` (`flatten`'s inverse).

    Several tensors need static per-example shapes (images have them).
    """
    if len(like) == 1:
        return [ops.reshape(flat, ops.shape(like[0]))]
    sizes = [math.prod(t.shape[1:]) for t in like]
    if any(size is None for size in sizes):
        raise ValueError("Several inputs of unknown per-example shape cannot be perturbed "
                         f"together (shapes {[tuple(t.shape) for t in like]}).")
    parts = ops.split(flat, [sum(sizes[:i]) for i in range(1, len(sizes))], axis=1)
    return [ops.reshape(p, ops.shape(t)) for p, t in zip(parts, like)]


class CleanPass(NamedTuple):
    """What the clean forward pass produces and an input gradient builds on.

    Each backend's `clean_pass` (keras_gradreg/backend/) makes one; everything after it
    (the penalty, the attacks' steps) is written once, in keras.ops.
    """

    inputs: list  # the float inputs, flattened in the model's input order
    outputs: Any  # the model's outputs at x
    loss: Any  # per-example loss at x, (batch,), at least float32
    gradient: Any  # per-example grad_x loss, (batch, N), at least float32
    state: list  # (variable, value) pairs the perturbed passes run with: the model as before the clean pass
    structure: Any  # the nesting of x, to rebuild perturbed inputs
    losses: Optional[list]  # add_loss and regulariser losses of the pass, if the model cannot hold them


def missing_gradient_error(missing: list, flat_x: list) -> ValueError:
    """The error for inputs the loss does not reach differentiably."""
    return ValueError(
        f"The loss does not depend differentiably on input(s) {missing} of "
        f"{len(flat_x)} (dtypes {[keras.backend.standardize_dtype(t.dtype) for t in flat_x]}): "
        "input-gradient regularisation perturbs the inputs, so they must reach the output "
        "through differentiable ops. Integer token ids fed to an Embedding, for instance, "
        "cannot be perturbed."
    )


def clean_pass_record(flat_x: list, grads: list, outputs: Any, loss: Any, state: list,
                      structure: Any, losses: Optional[list] = None) -> CleanPass:
    """The CleanPass of a backend's pass, from the gradient of each flat input (None where
    the loss does not reach it: a ValueError naming those inputs)."""
    missing = [i for i, g in enumerate(grads) if g is None]
    if missing:
        raise missing_gradient_error(missing, flat_x)
    gradient = flatten([at_least_float32(g) for g in grads])
    return CleanPass(flat_x, outputs, loss, gradient, state, structure, losses)
