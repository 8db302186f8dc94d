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
loss(x)) / h`` is ``loss(x + epsilon d)``, FGSM training without a random start,
wherever the step raises the loss (the unsquared slope is clamped at 0: a norm is not
negative). The step h dials the penalty between the gradient norm (h -> 0) and FGSM
(h = epsilon).

The perturbed passes see the model's state (BatchNorm moving statistics, dropout seeds)
as it was before the clean pass and leave no trace: they use the same dropout masks as
the clean pass (so the difference measures the input, not the noise) and never update
BatchNorm moving averages, which therefore track clean data only, exactly as in plain
training.
"""

import warnings
from typing import Any, Callable, Optional, Sequence

import keras
from keras import ops

from keras_gradreg import backend
from keras_gradreg import deprecation
from keras_gradreg import per_example
from keras_gradreg import validation
from keras_gradreg.attacks import ball

DEFAULT_H = 0.01
"""Finite-difference step, in the model's input units (the paper's and reference code's
default, used on [0, 1] CIFAR-10 pixels)."""
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


def default_attack_norm(where: str, attack_norm: Optional[str]) -> str:
    """attack_norm, or DEFAULT_ATTACK_NORM with a FutureWarning where it was not given: the
    default of GradRegModel and the penalty functions was "l2" before 0.7."""
    if attack_norm is not None:
        return attack_norm
    warnings.warn(f"{where}: attack_norm was not given; it is "
                  f"{per_example.DEFAULT_ATTACK_NORM!r} (the squared l1 penalty, against "
                  "l_inf attacks) since 0.7, 'l2' before. Pass attack_norm to choose and to "
                  "silence this warning.", FutureWarning, stacklevel=3)
    return per_example.DEFAULT_ATTACK_NORM


def check_options(h: float, attack_norm: str, difference: str, estimator: str,
                  penalty_power: int = 2, epsilon: Optional[float] = None) -> tuple:
    """Raises ValueError naming the first bad option, before any work is done.

    Returns:
      (h, epsilon) as Python floats (epsilon None for the squared penalty).
    """
    per_example.check_attack_norm(attack_norm)
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


def direction(g: Any, attack_norm: str, penalty_power: int = 2) -> Any:
    """The penalty's direction d, whose directional derivative g . d is the penalised dual
    norm: `ball.ascent_direction` with the penalty's unit.

    Args:
      g: per-example input gradients, shape (batch, N).
      attack_norm: one of ATTACK_NORMS.
      penalty_power: 2, the paper's penalty: d has unit l2 length (against "linf",
        sign(g) / sqrt(N), so g . d = ||g||_1 / sqrt(N), the reference code's scaling of
        the squared l1 penalty); 1: d has unit length in the attack norm (sign(g), so
        g . d = ||g||_1). They differ against l_inf attacks only.

    Returns:
      d of shape (batch, N) (0 where g = 0).
    """
    return ball.ascent_direction(g, attack_norm, unit_l2=penalty_power == 2)


def _perturbed_loss(model, clean: per_example.CleanPass, step: Any, y, loss_fn, training) -> Any:
    """loss(x + step), with the model's state as before the clean pass, discarded after."""
    shifted = [t + ops.cast(s, t.dtype)
               for t, s in zip(clean.inputs, per_example.unflatten(step, clean.inputs))]
    with keras.StatelessScope(state_mapping=clean.state):
        outputs = model(keras.tree.pack_sequence_as(clean.structure, shifted), training=training)
    return loss_fn(y, outputs)


def penalty_from_clean_pass(
    model: Callable,
    clean: per_example.CleanPass,
    y: Any,
    loss_fn: per_example.LossFn,
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
    unsquared penalty clamps the slope at 0: it estimates g . d = ||g||_* >= 0, and a
    falling secant, left as it is, puts a negative weight on the clean loss once
    penalty_weight * epsilon / h exceeds the clean weight, which training then drives
    down without bound. With h = epsilon it is FGSM's loss wherever the step raises the
    loss, and the clean loss where it does not.
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
    return ops.square(slope) if penalty_power == 2 else epsilon * ops.relu(slope)


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
    weights. With PyTorch, call it in your loop and `backward()` the objective (eager
    autograd; not under `torch.compile`, which has no double backward). With JAX,
    differentiate `stateless_input_gradient_penalty` instead. The
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
      attack_norm: the attack to defend against, one of per_example.ATTACK_NORMS; the penalty is
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
    h, epsilon = check_options(h, attack_norm, difference, estimator, penalty_power, epsilon)
    loss_fn = per_example.loss_fn(loss_fn)
    clean = backend.clean_pass(model, x, y, loss_fn, training,
                               differentiable=estimator == "double_backprop")
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


__getattr__ = deprecation.module_getattr("keras_gradreg.penalty")
"""Names this module had before 0.8 (deprecation.RENAMED), with a DeprecationWarning."""
