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
``method="double_backprop"`` computes exactly. The weights receive gradients through
``loss(x)`` and ``loss(x + h d)`` alike, as in the authors' reference code.

The perturbed passes see the model's state (BatchNorm moving statistics, dropout seeds)
as it was before the clean pass and leave no trace: they use the same dropout masks as
the clean pass (so the difference measures the input, not the noise) and never update
BatchNorm moving averages, which therefore track clean data only, exactly as in plain
training.
"""

from typing import Any, Callable, NamedTuple, Optional, Sequence

import keras
import tensorflow as tf

from keras_gradreg import validation

DEFAULT_H = 0.01
"""Finite-difference step, in the model's input units (the paper's and reference code's
default, used on [0, 1] CIFAR-10 pixels)."""

ATTACK_NORMS = ("linf", "l2", "l1")
"""Attacks the penalty defends against, named by the norm the attacker is measured in."""

DUAL_NORMS = {"linf": "l1", "l2": "l2", "l1": "linf"}
"""The gradient norm penalised against each attack norm: its dual. Against l_inf attacks
the penalty is the paper's "squared l1 penalty"."""

DIFFERENCES = ("forward", "central")
METHODS = ("finite_difference", "double_backprop")

LossFn = Callable[[Any, Any], tf.Tensor]


def _at_least_float32(t: tf.Tensor) -> tf.Tensor:
    """Casts float16/bfloat16 (mixed precision) up to float32; keeps float32/64."""
    t = tf.convert_to_tensor(t)
    return t if t.dtype in (tf.float32, tf.float64) else tf.cast(t, tf.float32)


def validate_options(h: float, attack_norm: str, difference: str, method: str) -> float:
    """Raises ValueError naming the first bad option, before any work is done.

    Returns:
      h as a Python float.
    """
    validation.check_choice("attack_norm", attack_norm, ATTACK_NORMS)
    validation.check_choice("difference", difference, DIFFERENCES)
    validation.check_choice("method", method, METHODS)
    return validation.check_number("h", h, hint=f"(the paper uses {DEFAULT_H})")


def attack_norm_of_dual(dual: str) -> str:
    """The attack norm whose dual is `dual` (the old `norm` argument's meaning)."""
    validation.check_choice("norm", dual, tuple(DUAL_NORMS.values()))
    return {d: attack for attack, d in DUAL_NORMS.items()}[dual]


def renamed_norm_error(norm: Any) -> TypeError:
    """The error for the old `norm=` argument, which named the penalised (dual) norm."""
    known = norm in DUAL_NORMS.values()
    meant = f": norm={norm!r} is now attack_norm={attack_norm_of_dual(norm)!r}" if known else ""
    return TypeError(
        "`norm` was renamed `attack_norm`, and it now names the attack to defend against "
        f"(the penalised gradient norm is its dual){meant}. For instance the paper's squared "
        "l1 penalty, against l_inf attacks, is attack_norm='linf'."
    )


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
        values = _at_least_float32(fn(y_true, _at_least_float32(y_pred)))
        if values.shape.rank == 0:
            raise ValueError(
                f"The loss {loss!r} returned a scalar; the penalty needs one value per "
                "example (use reduction=None or a loss name)."
            )
        if values.shape.rank > 1:
            values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
        return values

    def fn(y_true, y_pred):
        require_targets(y_true)
        outputs, targets = tf.nest.flatten(y_pred), tf.nest.flatten(y_true)
        per_output = fns * len(outputs) if len(fns) == 1 else fns
        weights = [1.0] * len(outputs) if loss_weights is None else list(loss_weights)
        if not len(per_output) == len(targets) == len(weights) == len(outputs):
            raise ValueError(
                f"The model has {len(outputs)} output(s) but got {len(targets)} target(s), "
                f"{len(fns)} loss(es) and {len(weights)} loss weight(s); give one target per "
                "output, and one loss (for all outputs) or one per output."
            )
        total = [float(w) * one(f, t, o) for f, t, o, w in zip(per_output, targets, outputs, weights)]
        return tf.add_n(total) if len(total) > 1 else total[0]

    return fn


def flatten_per_example(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
    """Concatenates the entries of each example over all tensors: (batch, N)."""
    batch = tf.shape(tensors[0])[0]
    return tf.concat([tf.reshape(t, [batch, -1]) for t in tensors], axis=1)


def unflatten_like(flat: tf.Tensor, like: Sequence[tf.Tensor]) -> list:
    """Splits (batch, N) back into tensors shaped like `like` (flatten_per_example's inverse)."""
    sizes = [tf.reduce_prod(tf.shape(t)[1:]) for t in like]
    parts = tf.split(flat, sizes, axis=1)
    return [tf.reshape(p, tf.shape(t)) for p, t in zip(parts, like)]


def direction(g: tf.Tensor, attack_norm: str) -> tf.Tensor:
    """The unit step d whose directional derivative g . d is the penalised dual norm.

    Args:
      g: per-example input gradients, shape (batch, N).
      attack_norm: one of ATTACK_NORMS.

    Returns:
      d of shape (batch, N), with ||d||_2 = 1 (0 where g = 0):
      "l2": g / ||g||_2, so g . d = ||g||_2;
      "linf": sign(g) / sqrt(N), so g . d = ||g||_1 / sqrt(N) (the reference code's
        scaling of the squared l1 penalty);
      "l1": sign(g_j) at j = argmax |g_j|, so g . d = ||g||_inf.
    """
    dual = DUAL_NORMS[validation.check_choice("attack_norm", attack_norm, ATTACK_NORMS)]
    if dual == "l2":
        return tf.math.divide_no_nan(g, tf.norm(g, axis=1, keepdims=True))
    if dual == "l1":
        return tf.sign(g) * tf.math.rsqrt(tf.cast(tf.shape(g)[1], g.dtype))
    one_hot = tf.one_hot(tf.argmax(tf.abs(g), axis=1), tf.shape(g)[1], dtype=g.dtype)
    return one_hot * tf.sign(g)


def dual_norm(g: tf.Tensor, attack_norm: str) -> tf.Tensor:
    """Per-example ||g||_*, the dual of the attack norm, of gradients of shape (batch, N)."""
    dual = DUAL_NORMS[validation.check_choice("attack_norm", attack_norm, ATTACK_NORMS)]
    return tf.norm(g, ord={"l2": 2, "l1": 1, "linf": float("inf")}[dual], axis=1)


class CleanPass(NamedTuple):
    """What the clean forward pass produces and the penalty builds on."""

    inputs: list  # the float inputs, flattened in the model's input order
    outputs: Any  # the model's outputs at x
    loss: tf.Tensor  # per-example loss at x, (batch,), at least float32
    gradient: tf.Tensor  # per-example grad_x loss, (batch, N), at least float32
    state: list  # (variable, value before the pass) for every non-trainable variable
    structure: Any  # the nesting of x, to rebuild perturbed inputs


def as_float(x: tf.Tensor) -> tf.Tensor:
    """The input as a float tensor: integer pixels are cast to floatx, floats kept."""
    x = tf.convert_to_tensor(x)
    if x.dtype.is_floating:
        return x
    if x.dtype.is_integer or x.dtype == tf.bool:
        return tf.cast(x, keras.backend.floatx())
    raise TypeError(
        f"Input of dtype {x.dtype.name} cannot be perturbed: input-gradient "
        "regularisation needs float (or integer pixel) inputs."
    )


def clean_pass(model: Callable, x: Any, y: Any, loss_fn: LossFn, training: bool) -> CleanPass:
    """Runs the model at x, recording the per-example loss and its input gradient.

    Integer inputs (e.g. uint8 pixels) are cast to float first; gradients, the step
    h and the direction are then in the input's own units.
    """
    flat_x = [as_float(t) for t in tf.nest.flatten(x)]
    state = [(v, tf.identity(v.value)) for v in getattr(model, "non_trainable_variables", [])]
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(flat_x)
        outputs = model(tf.nest.pack_sequence_as(x, flat_x), training=training)
        loss = loss_fn(y, outputs)
    grads = tape.gradient(loss, flat_x)
    missing = [i for i, g in enumerate(grads) if g is None]
    if missing:
        raise ValueError(
            f"The loss does not depend differentiably on input(s) {missing} of "
            f"{len(flat_x)} (dtypes {[t.dtype.name for t in flat_x]}): input-gradient "
            "regularisation perturbs the inputs, so they must reach the output through "
            "differentiable ops. Integer token ids fed to an Embedding, for instance, "
            "cannot be perturbed."
        )
    gradient = flatten_per_example([_at_least_float32(g) for g in grads])
    return CleanPass(flat_x, outputs, loss, gradient, state, x)


def _perturbed_loss(model, clean: CleanPass, step: tf.Tensor, y, loss_fn, training) -> tf.Tensor:
    """loss(x + step), with the model's state as before the clean pass, discarded after."""
    shifted = [
        t + tf.cast(s, t.dtype) for t, s in zip(clean.inputs, unflatten_like(step, clean.inputs))
    ]
    with keras.StatelessScope(state_mapping=clean.state):
        outputs = model(tf.nest.pack_sequence_as(clean.structure, shifted), training=training)
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
    method: str,
    training: bool,
) -> tf.Tensor:
    """The per-example penalty (g . d)^2, estimated or exact, from a clean pass.

    The direction d is a constant (stop-gradient). The finite difference and its
    subtraction are computed in float32 whatever the model's compute dtype.
    """
    d = tf.stop_gradient(direction(clean.gradient, attack_norm))
    if method == "double_backprop":
        return tf.square(tf.reduce_sum(clean.gradient * d, axis=1))
    ahead = _perturbed_loss(model, clean, h * d, y, loss_fn, training)
    if difference == "forward":
        slope = (ahead - clean.loss) / h
    else:
        behind = _perturbed_loss(model, clean, -h * d, y, loss_fn, training)
        slope = (ahead - behind) / (2.0 * h)
    return tf.square(slope)


def input_gradient_penalty(
    model: Callable,
    x: Any,
    y: Any,
    loss_fn: Any,
    *,
    h: float = DEFAULT_H,
    attack_norm: str = "l2",
    difference: str = "forward",
    method: str = "finite_difference",
    training: bool = True,
    sample_weight: Any = None,
) -> tuple:
    """Per-example loss and input-gradient penalty, for custom training loops.

    Call it inside your own `tf.GradientTape` (and `tf.function`, with or without
    `jit_compile`): both outputs are differentiable with respect to the weights.
    The paper's objective is `mean(loss) + penalty_weight / 2 * mean(penalty)`.

    Args:
      model: a Keras model or layer, called as `model(x, training=training)`.
      x: a batch of inputs, a tensor or a nest of tensors (every entry is perturbed;
        the direction spans all of them together). Integer inputs are cast to float.
      y: the targets, as the loss expects them.
      loss_fn: a Keras loss (name or object, from logits or probabilities) or a
        callable returning per-example values.
      h: finite-difference step, > 0, in the input's units.
      attack_norm: the attack to defend against, one of ATTACK_NORMS; the penalty is
        the squared dual norm of the input gradient ("linf": the paper's squared l1).
      difference: "forward" (2 forward passes) or "central" (3, error O(h^2)).
      method: "finite_difference", or "double_backprop" for the exact
        (g . d)^2 = ||g||_*^2 (divided by N against "linf"), which ignores h and difference.
      training: passed to the model in every pass.
      sample_weight: optional per-example weights, (batch,), multiplying both outputs.

    Returns:
      `(loss, penalty)`, tensors of shape (batch,) in float32 (float64 for a float64
      model): the per-example loss at x
      and the squared directional derivative ((loss(x + h d) - loss(x)) / h)^2.
    """
    h = validate_options(h, attack_norm, difference, method)
    loss_fn = per_example_loss_fn(loss_fn)
    clean = clean_pass(model, x, y, loss_fn, training)
    penalty = penalty_from_clean_pass(
        model, clean, y, loss_fn, h=h, attack_norm=attack_norm, difference=difference,
        method=method, training=training,
    )
    loss = clean.loss
    if sample_weight is not None:
        weight = tf.reshape(tf.cast(sample_weight, loss.dtype), [-1])
        loss, penalty = loss * weight, penalty * weight
    return loss, penalty
