"""GradRegModel's steps on the TensorFlow backend: GradientTape and tf.distribute."""

import contextlib
import functools
from typing import Optional

import keras
import tensorflow as tf

from keras_gradreg import per_example


def num_replicas() -> int:
    """Replicas the local batch is one of (Keras divides the compiled loss by it)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def distribution_scope(strategy: str):
    """The scope a run builds and fits in: MirroredStrategy over this machine's devices
    ("mirrored") or TensorFlow's default strategy ("default")."""
    return (tf.distribute.MirroredStrategy() if strategy == "mirrored"
            else tf.distribute.get_strategy()).scope()


def replica_position() -> tuple:
    """(replicas, this replica's index): (1, 0) outside a strategy's replica context."""
    context = tf.distribute.get_replica_context()
    if context is None:
        return 1, 0
    return context.num_replicas_in_sync, context.replica_id_in_sync_group


def _for_this_replica(draw, shape) -> tf.Tensor:
    """draw(shape), or under a strategy with R replicas this replica's share of
    draw((R * batch, ...)): Keras gives replica r the r-th slice of the global batch, so
    R replicas draw what one device would (for equal slices)."""
    replicas, index = replica_position()
    if replicas == 1:
        return draw(shape)
    whole = draw(tf.concat([[shape[0] * replicas], tf.cast(shape[1:], tf.int32)], 0)
                 if isinstance(shape[0], tf.Tensor) else (shape[0] * replicas,) + tuple(shape[1:]))
    start = tf.cast(index, tf.int32) * tf.cast(shape[0], tf.int32)
    return whole[start:start + shape[0]]


def stateless_uniform(shape, seed, minval: float, maxval: float, dtype) -> tf.Tensor:
    """Uniform draws in [minval, maxval), a function of seed ((2,) integers) only."""
    seed = tf.cast(seed, tf.int64)
    return _for_this_replica(
        lambda s: tf.random.stateless_uniform(s, seed, minval, maxval, dtype=dtype), shape)


def stateless_normal(shape, seed, dtype) -> tf.Tensor:
    """Standard normal draws, a function of seed ((2,) integers) only."""
    seed = tf.cast(seed, tf.int64)
    return _for_this_replica(lambda s: tf.random.stateless_normal(s, seed, dtype=dtype), shape)


def replica_mean(value: tf.Tensor) -> tf.Tensor:
    """The mean of a per-replica scalar over the replicas (itself without a strategy)."""
    context = tf.distribute.get_replica_context()
    if num_replicas() == 1 or context is None:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.MEAN, value)


def keeps_variables(model):
    """Nothing to do: TensorFlow's `fit` updates the variables in place."""
    del model
    return contextlib.nullcontext()


def snapshot(model) -> list:
    """(variable, value) pairs of the model's state now, for a `keras.StatelessScope` that
    runs a pass with it and leaves no trace: its non-trainable variables (TensorFlow's
    trainable ones are read live)."""
    return [(v, tf.identity(v.value)) for v in getattr(model, "non_trainable_variables", [])]


def clean_pass(model, x, y, loss_fn, training: bool,
               differentiable: bool = False) -> per_example.CleanPass:
    """penalty.clean_pass with a GradientTape; the perturbed passes reset the
    non-trainable variables to their values before it; the tape records the input
    gradient anyway (`differentiable` is PyTorch's)."""
    del differentiable
    flat_x = [per_example.as_float(t) for t in tf.nest.flatten(x)]
    state = snapshot(model)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(flat_x)
        outputs = model(tf.nest.pack_sequence_as(x, flat_x), training=training)
        loss = loss_fn(y, outputs)
    grads = tape.gradient(loss, flat_x)
    return per_example.clean_pass_record(flat_x, grads, outputs, loss, state, x)


def value_and_gradient(fn, x) -> tuple:
    """(values, aux, gradient): fn(x) -> (per-example values, aux), and the gradient of
    the values' sum with respect to x (shaped like x), with a GradientTape."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        values, aux = fn(x)
    return values, aux, tape.gradient(values, x)


COMPILES_STEPS = True
"""Whether `fit` may compile the steps (jit_compile=True: XLA)."""

PADDING = "multiple"
"""How the attacks pad their batches (attacks.registry.padded_size): to an attack's
`batch_multiple` only, as the graphs take any batch size (`compiled`) but a `fused`
kernel compiles per shape."""


SPLITS_BATCHES = False
"""Whether the attacks split a batch over the CPU cores (attacks.registry.batch_parts):
no, TensorFlow's operations use the cores themselves (1.9 of 2 busy, docs/cost.md)."""


def compiled(fn):
    """fn as a TensorFlow graph (the attacks, the verifications' logits), traced once per
    argument shapes and relaxed to any batch size after a second one."""
    return tf.function(fn, reduce_retracing=True, autograph=False)


def fused(fn):
    """fn as one XLA kernel inside a graph (the attacks' element-wise bookkeeping: FAB's
    bisection, Square's candidate; docs/cost.md)."""
    return tf.function(fn, jit_compile=True, autograph=False)


def in_trace(x) -> bool:
    """Whether x is a symbolic tensor of a graph being traced."""
    del x
    return tf.inside_function()


def has_gpu() -> bool:
    """Whether TensorFlow sees a GPU."""
    return bool(tf.config.list_logical_devices("GPU"))


def _everywhere(flag: tf.Tensor) -> tf.Tensor:
    """True on every replica iff the flag is true on every replica."""
    failures = tf.cast(tf.logical_not(flag), tf.float32)
    replica = tf.distribute.get_replica_context()
    if replica is not None:
        failures = replica.all_reduce(tf.distribute.ReduceOp.SUM, failures)
    return tf.equal(failures, 0.0)


def _apply_if(finite: tf.Tensor, optimizer, gradients: list, variables: list) -> None:
    """optimizer.apply_gradients only if `finite` (agreed by all replicas), XLA-safe.

    A strategy that synchronises through merge_call does not allow that call inside a
    cond in replica context, so the cond then runs in cross-replica context, as Keras'
    LossScaleOptimizer does.
    """

    def apply(grads):
        optimizer.apply_gradients(zip(grads, variables))

    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(finite, lambda: apply(gradients), lambda: None)
        return

    def cross_replica(distribution, finite, grads):
        agreed = distribution.experimental_local_results(finite)[0]
        tf.cond(agreed,
                lambda: distribution.extended.call_for_each_replica(apply, args=(grads,)),
                lambda: None)

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(finite, gradients))


def _step(model, x, y, sample_weight, penalty_weight, carry) -> tuple:
    """(y_pred, weight gradients, objective, penalty, grad_norm, penalised, the carry's
    gradient: a list of it, or empty without a carry) of one update."""
    with tf.GradientTape() as tape:
        if carry is not None:
            tape.watch(carry)
        y_pred, loss, penalty, grad_norm = model._objective(
            x, y, sample_weight, True, penalty_weight, carry)
        scaled = model.optimizer.scale_loss(loss)
    # The two branches of the lazy step's tf.cond must return tensors, not None.
    unconnected = "zero" if model._step_weight()[1] > 1 else "none"
    sources = model.trainable_weights + ([] if carry is None else [carry])
    gradients = tape.gradient(scaled, sources, unconnected_gradients=unconnected)
    count = len(model.trainable_weights)
    return (y_pred, gradients[:count], loss, penalty, grad_norm,
            tf.constant(penalty_weight is not None), gradients[count:])


def train_step(model, data, penalised: Optional[bool] = None) -> dict:
    """SteppedModel.train_step: one penalised (or, between lazy steps, plain) update, or
    `model._replays()` updates on the batch, each carrying what the last one gave.

    Between lazy steps (penalty_every > 1) `penalised` says which step this is; None
    decides in the step itself, by a tf.cond on the iteration count (`fit` under XLA
    decides outside, see `lazy_train_function`).
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    weight, every = model._step_weight()

    def update(carry):
        if every == 1 or weight is None:
            return _step(model, x, y, sample_weight, weight, carry)
        if penalised is not None:
            return _step(model, x, y, sample_weight, every * weight if penalised else None, carry)
        return tf.cond(
            tf.equal(model.optimizer.iterations % every, 0),
            lambda: _step(model, x, y, sample_weight, every * weight, carry),
            lambda: _step(model, x, y, sample_weight, None, carry),
        )

    carry, finite_everywhere = model._initial_carry(x), tf.constant(True)
    for _ in range(model._replays()):
        y_pred, gradients, loss, penalty, grad_norm, weighted, carry_gradient = update(carry)
        finite = _everywhere(model._finite(x, loss))  # all replicas apply the update or none
        _apply_if(finite, model.optimizer, gradients, model.trainable_weights)
        finite_everywhere = tf.logical_and(finite_everywhere, finite)
        carry = model._next_carry(carry, (carry_gradient or [None])[0])
    model._track(x, loss, penalty, grad_norm, weighted, finite_everywhere)
    return model._logs(x, y, y_pred, sample_weight, training=True, finite=finite_everywhere)


def test_step(model, data) -> dict:
    """GradRegModel.test_step: the objective in inference mode, and the metrics."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    y_pred, loss, penalty, grad_norm = model._objective(x, y, sample_weight, False,
                                                        model.penalty_weight)  # GradRegModel's
    finite = model._finite(x, loss)
    model._track(x, loss, penalty, grad_norm, tf.constant(True), finite)
    return model._logs(x, y, y_pred, sample_weight, training=False, finite=finite)


def lazy_train_function(model):
    """`fit`'s step function for penalty_every > 1 (what Keras' make_train_function makes).

    Under XLA (`jit_compile=True`, which Keras turns on by itself for one GPU) the
    penalised and the plain step are compiled apart and one is chosen per step on the
    host from the optimizer's iteration count: XLA:CPU runs the lazy step's tf.cond many
    times slower than a plain step (docs/cost.md).
    Reading the count waits for the previous step. Without XLA, or with several steps
    per execution (one compiled loop), the tf.cond decides inside the step.
    """
    if model.run_eagerly or not model.jit_compile or model.steps_per_execution != 1:
        return model._make_function(model.train_step)
    steps = {p: model._make_function(functools.partial(train_step, model, penalised=p))
             for p in (True, False)}

    def step(iterator):
        return steps[int(model.optimizer.iterations) % model._step_weight()[1] == 0](iterator)

    return step
