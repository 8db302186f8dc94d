"""The input-gradient penalty of Finlay & Oberman (2019), by finite differences.

The training objective of "Scaleable input gradient regularization for adversarial
robustness" (C. Finlay and A. M. Oberman, arXiv:1905.11468) is

    loss(x, y) + (lambda / 2) * ||grad_x loss(x, y)||_*^2 ,

where ``||.||_*`` is the dual of the norm the attacker is measured in. Instead of
double backpropagation, the squared gradient norm is estimated by a finite difference
along the normalised gradient direction ``d`` (a constant: no gradient flows through
it):

    forward:  ((loss(x + h d) - loss(x)) / h) ** 2
    central:  ((loss(x + h d) - loss(x - h d)) / (2 h)) ** 2

Both are estimates of ``(g . d) ** 2`` with ``g = grad_x loss``; that quantity is what
``estimator="double_backprop"`` computes exactly. The weights receive gradients through
``loss(x)`` and ``loss(x + h d)`` alike, as in the authors' reference code.

The penalty also comes unsquared (``penalty_power=1``), as Rodriguez-Munoz, Wang &
Torralba (ECCV 2024, "Characterizing model robustness via natural input gradients") train
with it: ``penalty_weight * epsilon * ||grad_x loss||_*``, the dual norm scaled by the
attack's radius. Its direction is a unit step in the attack's own norm (against l_inf
attacks ``sign(g)``), so ``x + h d`` is an attacker's step of length h; with ``h =
epsilon``, weight 1 and the forward difference, ``loss(x) + epsilon * (loss(x + h d) -
loss(x)) / h`` is ``loss(x + epsilon d)``, FGSM training without a random start. The
step h dials the penalty between the gradient norm (h -> 0) and FGSM (h = epsilon).

The perturbed passes see the model's state (BatchNorm moving statistics, dropout seeds)
as it was before the clean pass and leave no trace: they use the same dropout masks as
the clean pass (so the difference measures the input, not the noise) and never update
BatchNorm moving averages, which therefore track clean data only, exactly as in plain
training.
"""

import math
import warnings
from typing import Any, Callable, NamedTuple, Optional, Sequence

import keras
from keras import ops

from keras_gradreg import deprecation
from keras_gradreg import validation
from keras_gradreg.attacks import ball

DEFAULT_H = 0.01
"""Finite-difference step, in the model's input units (the paper's and reference code's
default, used on [0, 1] CIFAR-10 pixels)."""

ATTACK_NORMS = ("linf", "l2", "l1")
"""Attacks the penalty defends against, named by the norm the attacker is measured in."""

DUAL_NORMS = {"linf": "l1", "l2": "l2", "l1": "linf"}
"""The gradient norm penalised against each attack norm: its dual. Against l_inf attacks
the penalty is the paper's "squared l1 penalty"."""

DEFAULT_ATTACK_NORM = "linf"
"""The attack norm when none is given, everywhere (GradRegModel, the penalty functions,
adversarial training, the bounds, the scripts): the paper's squared l1 penalty."""

PENALTY_POWERS = (2, 1)
"""The power of the dual norm the penalty is: 2, the paper's `(penalty_weight / 2) *
||g||_*^2`, along a direction of unit l2 length; 1, `penalty_weight * epsilon * ||g||_*`
(Rodriguez-Munoz et al. 2024), along a unit step in the attack norm."""
PENALTY_FACTORS = {2: 0.5, 1: 1.0}
"""The factor of penalty_weight in the objective, by power: lambda / 2 (the paper's), and
lambda (Rodriguez-Munoz et al. 2024, whose per-example penalty holds epsilon)."""

DIFFERENCES = ("forward", "central")
"""Finite differences: "forward", (loss(x + h d) - loss(x)) / h, error O(h), two forward
passes; "central", (loss(x + h d) - loss(x - h d)) / 2h, error O(h^2), three."""
ESTIMATORS = ("finite_difference", "double_backprop")
"""How the squared gradient norm is computed: by the finite difference (the paper's
method), or exactly by double backpropagation (the baseline it replaces)."""

LossFn = Callable[[Any, Any], Any]
"""A per-example loss: (y_true, y_pred) -> values of shape (batch,)."""


def at_least_float32(t: Any) -> Any:
    """Casts float16/bfloat16 (mixed precision) up to float32; keeps float32/64."""
    t = ops.convert_to_tensor(t)
    return t if keras.backend.standardize_dtype(t.dtype) in ("float32", "float64") \
        else ops.cast(t, "float32")


def default_attack_norm(where: str, attack_norm: Optional[str]) -> str:
    """attack_norm, or DEFAULT_ATTACK_NORM with a FutureWarning where it was not given: the
    default of GradRegModel and the penalty functions was "l2" before 0.7."""
    if attack_norm is not None:
        return attack_norm
    warnings.warn(f"{where}: attack_norm was not given; it is {DEFAULT_ATTACK_NORM!r} (the "
                  "squared l1 penalty, against l_inf attacks) since 0.7, 'l2' before. Pass "
                  "attack_norm to choose and to silence this warning.", FutureWarning,
                  stacklevel=3)
    return DEFAULT_ATTACK_NORM


def validate_options(h: float, attack_norm: str, difference: str, estimator: str,
                     penalty_power: int = 2, epsilon: Optional[float] = None) -> tuple:
    """Raises ValueError naming the first bad option, before any work is done.

    Returns:
      (h, epsilon) as Python floats (epsilon None for the squared penalty).
    """
    validation.check_choice("attack_norm", attack_norm, ATTACK_NORMS)
    validation.check_choice("difference", difference, DIFFERENCES)
    validation.check_choice("estimator", estimator, ESTIMATORS)
    if penalty_power not in PENALTY_POWERS or isinstance(penalty_power, bool):
        raise ValueError(f"penalty_power={penalty_power!r} is not supported; use 2 (the "
                         "paper's squared dual norm) or 1 (the dual norm times epsilon).")
    h = validation.check_number("h", h, hint=f"(the paper uses {DEFAULT_H})")
    if penalty_power == 2:
        if epsilon is not None:
            raise ValueError(f"epsilon={epsilon!r} scales the unsquared penalty "
                             "(penalty_power=1) only; the squared one takes no radius.")
        return h, None
    if epsilon is None:
        raise ValueError("penalty_power=1 is penalty_weight * epsilon * ||grad_x loss||_*: "
                         "pass epsilon, the attack's radius (e.g. 8/255).")
    return h, validation.check_number("epsilon", epsilon, hint="(the attack's radius)")


def attack_norm_of_dual(dual: str) -> str:
    """The attack norm whose dual is `dual` (the old `norm` argument's meaning)."""
    validation.check_choice("norm", dual, tuple(DUAL_NORMS.values()))
    return {d: attack for attack, d in DUAL_NORMS.items()}[dual]


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


def require_targets(y: Any) -> None:
    """Raises ValueError if y is None: the penalty is the input gradient of the loss."""
    if y is None:
        raise ValueError("The penalty is the input gradient of the loss, which needs "
                         "targets: pass y (fit(x, y), or a dataset of (x, y) pairs).")


def per_example_loss_fn(loss: Any, loss_weights: Optional[Sequence[float]] = None) -> LossFn:
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

    def one(fn, y_true, y_pred):
        values = at_least_float32(fn(y_true, at_least_float32(y_pred)))
        if len(values.shape) == 0:
            raise ValueError(
                f"The loss {loss!r} returned a scalar; the penalty needs one value per "
                "example (use reduction=None or a loss name)."
            )
        if len(values.shape) > 1:
            values = ops.mean(values, axis=tuple(range(1, len(values.shape))))
        return values

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
        total = [float(w) * one(f, t, o) for f, t, o, w in zip(per_output, targets, outputs, weights)]
        return sum(total[1:], total[0])

    return fn


def flatten_per_example(tensors: Sequence[Any]) -> Any:
    """Concatenates the entries of each example over all tensors: (batch, N)."""
    batch = ops.shape(tensors[0])[0]
    flat = [ops.reshape(t, (batch, -1)) for t in tensors]
    return flat[0] if len(flat) == 1 else ops.concatenate(flat, axis=1)


def unflatten_like(flat: Any, like: Sequence[Any]) -> list:
    """Splits (batch, N) back into tensors shaped like `like` (flatten_per_example's inverse).

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


def direction(g: Any, attack_norm: str, penalty_power: int = 2) -> Any:
    """The step d whose directional derivative g . d is the penalised dual norm.

    Args:
      g: per-example input gradients, shape (batch, N).
      attack_norm: one of ATTACK_NORMS.
      penalty_power: 2, the paper's penalty: d has unit l2 length; 1: d has unit length
        in the attack norm. They differ against l_inf attacks only.

    Returns:
      d of shape (batch, N) (0 where g = 0):
      "l2": g / ||g||_2, so g . d = ||g||_2;
      "linf": sign(g) / sqrt(N), so g . d = ||g||_1 / sqrt(N) (the reference code's
        scaling of the squared l1 penalty); with penalty_power 1, sign(g), so
        g . d = ||g||_1;
      "l1": sign(g_j) at j = argmax |g_j|, so g . d = ||g||_inf.
    """
    dual = DUAL_NORMS[validation.check_choice("attack_norm", attack_norm, ATTACK_NORMS)]
    if dual == "l2":
        return ops.divide_no_nan(g, ops.sqrt(ops.sum(ops.square(g), axis=1, keepdims=True)))
    if dual == "l1" and penalty_power == 1:
        return ops.sign(g)
    if dual == "l1":
        return ops.sign(g) * ops.rsqrt(ops.cast(ops.shape(g)[1], g.dtype))
    return ops.one_hot(ops.argmax(ops.abs(g), axis=1), ops.shape(g)[1], dtype=g.dtype) * ops.sign(g)


def dual_norm(g: Any, attack_norm: str) -> Any:
    """Per-example ||g||_*, the dual of the attack norm, of gradients of shape (batch, N)."""
    return ball.norm(g, DUAL_NORMS[validation.check_choice("attack_norm", attack_norm,
                                                           ATTACK_NORMS)])


class CleanPass(NamedTuple):
    """What the clean forward pass produces and the penalty builds on.

    Each backend's `clean_pass` (keras_gradreg/backend/) makes one; everything after it
    is written once, here.
    """

    inputs: list  # the float inputs, flattened in the model's input order
    outputs: Any  # the model's outputs at x
    loss: Any  # per-example loss at x, (batch,), at least float32
    gradient: Any  # per-example grad_x loss, (batch, N), at least float32
    state: list  # (variable, value) pairs the perturbed passes run with: the model as before the clean pass
    structure: Any  # the nesting of x, to rebuild perturbed inputs
    losses: Optional[list]  # add_loss and regulariser losses of the pass, if the model cannot hold them


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


def missing_gradient_error(missing: list, flat_x: list) -> ValueError:
    """The error for inputs the loss does not reach differentiably."""
    return ValueError(
        f"The loss does not depend differentiably on input(s) {missing} of "
        f"{len(flat_x)} (dtypes {[keras.backend.standardize_dtype(t.dtype) for t in flat_x]}): "
        "input-gradient regularisation perturbs the inputs, so they must reach the output "
        "through differentiable ops. Integer token ids fed to an Embedding, for instance, "
        "cannot be perturbed."
    )


def clean_pass(model: Callable, x: Any, y: Any, loss_fn: LossFn, training: bool) -> CleanPass:
    """Runs the model at x, recording the per-example loss and its input gradient.

    Integer inputs (e.g. uint8 pixels) are cast to float first; gradients, the step
    h and the direction are then in the input's own units. The model's state (BatchNorm
    statistics, seeds) is updated as by an ordinary call. The input gradient is the one
    thing taken differently per backend (keras_gradreg/backend/).
    """
    from keras_gradreg import backend  # here: the backend modules import this one

    return backend.current().clean_pass(model, x, y, loss_fn, training)


def _perturbed_loss(model, clean: CleanPass, step: Any, y, loss_fn, training) -> Any:
    """loss(x + step), with the model's state as before the clean pass, discarded after."""
    shifted = [
        t + ops.cast(s, t.dtype) for t, s in zip(clean.inputs, unflatten_like(step, clean.inputs))
    ]
    with keras.StatelessScope(state_mapping=clean.state):
        outputs = model(keras.tree.pack_sequence_as(clean.structure, shifted), training=training)
    return loss_fn(y, outputs)


def penalty_from_clean_pass(
    model: Callable,
    clean: CleanPass,
    y: Any,
    loss_fn: LossFn,
    *,
    h: float,
    attack_norm: str,
    difference: str,
    estimator: str,
    training: bool,
    penalty_power: int = 2,
    epsilon: Optional[float] = None,
) -> Any:
    """The per-example penalty, estimated or exact, from a clean pass: (g . d)^2, or
    epsilon * (g . d) with penalty_power 1.

    The direction d is a constant (stop-gradient). The finite difference and its
    subtraction are computed in float32 whatever the model's compute dtype. The
    unsquared penalty takes the difference as it is, not its absolute value (it
    estimates g . d = ||g||_* >= 0), so that with h = epsilon it is FGSM's loss exactly.
    """
    d = ops.stop_gradient(direction(clean.gradient, attack_norm, penalty_power))
    if estimator == "double_backprop":
        slope = ops.sum(clean.gradient * d, axis=1)
    else:
        ahead = _perturbed_loss(model, clean, h * d, y, loss_fn, training)
        if difference == "forward":
            slope = (ahead - clean.loss) / h
        else:
            behind = _perturbed_loss(model, clean, -h * d, y, loss_fn, training)
            slope = (ahead - behind) / (2.0 * h)
    return ops.square(slope) if penalty_power == 2 else epsilon * slope


def input_gradient_penalty(
    model: Callable,
    x: Any,
    y: Any,
    loss_fn: Any,
    *,
    h: float = DEFAULT_H,
    attack_norm: Optional[str] = None,
    difference: str = "forward",
    estimator: str = "finite_difference",
    penalty_power: int = 2,
    epsilon: Optional[float] = None,
    training: bool = True,
    sample_weight: Any = None,
    **renamed: Any,
) -> tuple:
    """Per-example loss and input-gradient penalty, for custom training loops.

    With TensorFlow, call it inside your own `tf.GradientTape` (and `tf.function`,
    with or without `jit_compile`): both outputs are differentiable with respect to the
    weights. With JAX, differentiate `stateless_input_gradient_penalty` instead. The
    paper's objective is `mean(loss) + penalty_weight / 2 * mean(penalty)`; with
    `penalty_power=1`, Rodriguez-Munoz et al.'s is `clean_weight * mean(loss) +
    penalty_weight * mean(penalty)` (PENALTY_FACTORS).

    Args:
      model: a Keras model or layer, called as `model(x, training=training)`.
      x: a batch of inputs, a tensor or a nest of tensors (every entry is perturbed;
        the direction spans all of them together). Integer inputs are cast to float.
      y: the targets, as the loss expects them.
      loss_fn: a Keras loss (name or object, from logits or probabilities) or a
        callable returning per-example values.
      h: finite-difference step, > 0, in the input's units.
      attack_norm: the attack to defend against, one of ATTACK_NORMS; the penalty is
        the squared dual norm of the input gradient ("linf", the default: the paper's
        squared l1).
      difference: "forward" (2 forward passes) or "central" (3, error O(h^2)).
      estimator: "finite_difference", or "double_backprop" for the exact
        (g . d)^2 = ||g||_*^2 (divided by N against "linf"), which ignores h and difference.
      penalty_power: 2 (the paper's squared dual norm) or 1 (the dual norm times
        epsilon), PENALTY_POWERS.
      epsilon: the attack's radius, which scales the unsquared penalty (needed with
        penalty_power 1, refused with 2).
      training: passed to the model in every pass.
      sample_weight: optional per-example weights, (batch,), multiplying both outputs.
      **renamed: `method`, the old name of `estimator` (a DeprecationWarning).

    Returns:
      `(loss, penalty)`, tensors of shape (batch,) in float32 (float64 for a float64
      model): the per-example loss at x and the squared directional derivative
      ((loss(x + h d) - loss(x)) / h)^2, or with penalty_power 1 epsilon times the
      directional derivative itself.
    """
    estimator = deprecation.renamed_keyword("input_gradient_penalty", renamed, "estimator",
                                            estimator, "finite_difference")
    attack_norm = default_attack_norm("input_gradient_penalty", attack_norm)
    h, epsilon = validate_options(h, attack_norm, difference, estimator, penalty_power, epsilon)
    loss_fn = per_example_loss_fn(loss_fn)
    clean = clean_pass(model, x, y, loss_fn, training)
    penalty = penalty_from_clean_pass(
        model, clean, y, loss_fn, h=h, attack_norm=attack_norm, difference=difference,
        estimator=estimator, training=training, penalty_power=penalty_power, epsilon=epsilon,
    )
    loss = clean.loss
    if sample_weight is not None:
        weight = ops.reshape(ops.cast(sample_weight, loss.dtype), (-1,))
        loss, penalty = loss * weight, penalty * weight
    return loss, penalty


def stateless_input_gradient_penalty(
    model: keras.Model,
    trainable_variables: Sequence[Any],
    non_trainable_variables: Sequence[Any],
    x: Any,
    y: Any,
    loss_fn: Any,
    **options: Any,
) -> tuple:
    """`input_gradient_penalty` as a pure function of the model's variables (for JAX).

    The counterpart of `keras.Model.stateless_call`: nothing is read from or written to
    the model's variables, so it can be differentiated with `jax.grad` and compiled
    with `jax.jit` in your own loop (docs/guides/distributed.md). It also runs on TensorFlow.

    Args:
      model: a built Keras model.
      trainable_variables: values of `model.trainable_variables`, in that order.
      non_trainable_variables: values of `model.non_trainable_variables` (BatchNorm
        statistics, dropout seeds), in that order.
      x: as for `input_gradient_penalty`.
      y: as for `input_gradient_penalty`.
      loss_fn: as for `input_gradient_penalty`.
      **options: `h`, `attack_norm`, `difference`, `estimator`, `penalty_power`,
        `epsilon`, `training`, `sample_weight`, as for `input_gradient_penalty`.

    Returns:
      `((loss, penalty), non_trainable_variables)`: the per-example loss and penalty,
      shape (batch,), and the new non-trainable values (updated by the clean pass only).
    """
    for name, given, expected in (("trainable_variables", trainable_variables, model.trainable_variables),
                                  ("non_trainable_variables", non_trainable_variables,
                                   model.non_trainable_variables)):
        if len(given) != len(expected):
            raise ValueError(f"{name} has {len(given)} values; the model {model.name!r} has "
                             f"{len(expected)} (pass them in the order of model.{name}).")
    mapping = list(zip(model.trainable_variables, trainable_variables)) + list(
        zip(model.non_trainable_variables, non_trainable_variables))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        loss, penalty = input_gradient_penalty(model, x, y, loss_fn, **options)
    new = [scope.get_current_value(v) for v in model.non_trainable_variables]
    return (loss, penalty), [old if value is None else value
                             for old, value in zip(non_trainable_variables, new)]
