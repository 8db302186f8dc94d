"""GradRegModel's steps on the JAX backend: jax.grad over stateless calls.

Under `keras.distribution` the arrays are global (sharded over processes and devices),
so batch means are global means: no per-replica scaling, and a step's finiteness is
the same in every process.
"""

import contextlib
import functools
from typing import Optional

import jax
import keras
from jax import numpy as jnp

from keras_gradreg import per_example


def join_processes(address: str, num_processes: int, process_id: int, timeout: int) -> None:
    """Joins a multi-process run: JAX's distributed runtime with gloo collectives (CPUs)."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(address, num_processes, process_id,
                               initialization_timeout=timeout)


def gather_from_processes(array):
    """Every process's `array`, stacked (a collective: every process calls it)."""
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(array)


def send_from_chief(array):
    """Process 0's `array`, in every process (a collective: every process calls it)."""
    from jax.experimental import multihost_utils

    return multihost_utils.broadcast_one_to_all(array)


def distribution_scope(strategy: str):
    """The scope a run builds and fits in: keras.distribution's DataParallel over every
    device of every process ("data_parallel"), or none ("default")."""
    if strategy == "data_parallel":
        return keras.distribution.DataParallel(devices=jax.devices()).scope()
    return contextlib.nullcontext()


def replica_position() -> tuple:
    """(1, 0): JAX computes on global arrays, one "replica"."""
    return 1, 0


def num_replicas() -> int:
    """1: JAX computes on global arrays, the compiled loss is the global batch's mean."""
    return 1


def _key(seed):
    return jax.random.wrap_key_data(jnp.asarray(seed).astype(jnp.uint32), impl="threefry2x32")


def stateless_uniform(shape, seed, minval: float, maxval: float, dtype):
    """Uniform draws in [minval, maxval), a function of seed ((2,) integers) only. The
    arrays are global (keras.distribution), so any number of processes draw alike."""
    return jax.random.uniform(_key(seed), tuple(shape), dtype, minval, maxval)


def stateless_normal(shape, seed, dtype):
    """Standard normal draws, a function of seed ((2,) integers) only."""
    return jax.random.normal(_key(seed), tuple(shape), dtype)


def replica_mean(value):
    """Itself: a batch mean on JAX's global arrays is already the mean over every device."""
    return value


def snapshot(model) -> list:
    """(variable, value) pairs of the model's state now, for a `keras.StatelessScope` that
    runs a pass with it and leaves no trace: every variable (a nested scope does not see
    the values an enclosing one maps, so the trainable ones are given too)."""
    return [(v, v.value) for v in model.trainable_variables + model.non_trainable_variables]


def clean_pass(model, x, y, loss_fn, training: bool,
               differentiable: bool = False) -> per_example.CleanPass:
    """penalty.clean_pass with jax.value_and_grad over the model's stateless call.

    The variables' current values are read (inside a train step they are the step's
    traced values), the new non-trainable values are assigned back (a StatelessScope
    records them), and the perturbed passes run with the values from before. jax.grad
    differentiates the input gradient on demand (`differentiable` is PyTorch's).
    """
    del differentiable
    flat_x = [per_example.as_float(t) for t in keras.tree.flatten(x)]
    state = snapshot(model)  # the values before the pass, which the perturbed ones use
    trainable = [v.value for v in model.trainable_variables]
    before = [v.value for v in model.non_trainable_variables]
    kwargs = {"training": training} if getattr(model, "_call_has_training_arg", True) else {}

    def total_loss(flat):
        outputs, after, losses = model.stateless_call(
            trainable, before, keras.tree.pack_sequence_as(x, flat), return_losses=True, **kwargs)
        loss = loss_fn(y, outputs)
        return jnp.sum(loss), (loss, outputs, after, losses)

    (_, (loss, outputs, after, losses)), grads = jax.value_and_grad(total_loss, has_aux=True)(flat_x)
    for variable, value in zip(model.non_trainable_variables, after):
        variable.assign(value)
    return per_example.clean_pass_record(flat_x, grads, outputs, loss, state, x, list(losses))


def value_and_gradient(fn, x) -> tuple:
    """(values, aux, gradient): fn(x) -> (per-example values, aux), and the gradient of
    the values' sum with respect to x (shaped like x), with jax.value_and_grad."""

    def total(x):
        values, aux = fn(x)
        return jnp.sum(values), (values, aux)

    (_, (values, aux)), gradient = jax.value_and_grad(total, has_aux=True)(x)
    return values, aux, gradient


COMPILES_STEPS = True
"""Whether `fit` may compile the steps (jit_compile=True: jax.jit, Keras' default)."""

PADDING = "buckets"
"""How the attacks pad their batches (attacks.registry.padded_size): to a few sizes, as a
jitted function compiles again for every new shape."""


SPLITS_BATCHES = True
"""Whether the attacks split a batch over the CPU cores (attacks.registry.batch_parts):
yes, XLA:CPU runs one computation on about one core (1.2 of 2 busy, docs/cost.md)."""


def compiled(fn):
    """fn compiled whole by XLA (jax.jit), once per argument shapes."""
    return jax.jit(fn)


def fused(fn):
    """fn itself: inside a jitted attack XLA fuses it anyway."""
    return fn


def in_trace(x) -> bool:
    """Whether x is a tracer of a function being jitted."""
    return isinstance(x, jax.core.Tracer)


def has_gpu() -> bool:
    """Whether JAX runs on a GPU."""
    return jax.default_backend() == "gpu"


def _current(scope, variables, old) -> list:
    """The values a StatelessScope ended with (the old ones where nothing was assigned)."""
    new = [scope.get_current_value(v) for v in variables]
    return [o if n is None else n for n, o in zip(new, old)]


def _objective(model, penalty_weight, training, trainable, non_trainable, metrics,
               optimizer_variables, x, y, sample_weight, carry=None) -> tuple:
    """model._objective as a pure function of the variables, for jax.value_and_grad.

    Returns:
      (the loss to differentiate (scaled for mixed precision),
       (objective, y_pred, penalty, grad_norm, new non-trainable values, new metric values)).
    """
    mapping = (list(zip(model.trainable_variables, trainable))
               + list(zip(model.non_trainable_variables, non_trainable))
               + list(zip(model.metrics_variables, metrics)))
    if optimizer_variables is not None:  # the iteration count seeds random draws
        mapping += list(zip(model.optimizer.variables, optimizer_variables))
    with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
        y_pred, loss, penalty, grad_norm = model._objective(
            x, y, sample_weight, training, penalty_weight, carry)
    non_trainable = _current(scope, model.non_trainable_variables, non_trainable)
    metrics = _current(scope, model.metrics_variables, metrics)
    scaled = loss
    if training:
        with keras.StatelessScope(
                state_mapping=list(zip(model.optimizer.variables, optimizer_variables))):
            scaled = model.optimizer.scale_loss(loss)
    return scaled, (loss, y_pred, penalty, grad_norm, non_trainable, metrics)


def _logs(model, metrics, x, y, y_pred, sample_weight, step, finite, training,
          weights: tuple = ()) -> tuple:
    """(logs, new metric values): the trackers and compiled metrics, updated statelessly;
    `weights`, (variable, value) pairs, for metrics that call the model (the bounds)."""
    loss, penalty, grad_norm, penalised = step
    mapping = list(weights) + list(zip(model.metrics_variables, metrics))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        model._track(x, loss, penalty, grad_norm, penalised, finite)
        logs = model._logs(x, y, y_pred, sample_weight, training=training, finite=finite)
    return logs, _current(scope, model.metrics_variables, metrics)


def _iterations(model, optimizer_variables):
    """The optimizer's iteration count among its variables' values."""
    return next(value for v, value in zip(model.optimizer.variables, optimizer_variables)
                if v is model.optimizer.iterations)


def train_step(model, state, data, penalised: Optional[bool] = None) -> tuple:
    """SteppedModel.train_step (Keras' JAX trainer contract: (state, data) -> (logs, state)):
    one update, or `model._replays()` updates on the batch, each carrying what the last
    one gave.

    Between lazy steps (penalty_every > 1) `penalised` says which step this is; None
    decides in the step itself, by a lax.cond on the iteration count (`fit` decides
    outside, see `lazy_train_function`).
    """
    trainable, non_trainable, optimizer_variables, metrics = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    weight, every = model._step_weight()

    def gradients(penalty_weight, state, carry):
        """(weight gradients, the carry's (None without one), aux) of one update."""
        trainable, non_trainable, optimizer_variables, metrics = state

        def objective(t, c):
            return _objective(model, penalty_weight, True, t, non_trainable, metrics,
                              optimizer_variables, x, y, sample_weight, c)

        if carry is None:
            (_, aux), grads = jax.value_and_grad(lambda t: objective(t, None), has_aux=True)(
                trainable)
            return grads, None, aux
        (_, aux), (grads, carry_grad) = jax.value_and_grad(objective, argnums=(0, 1),
                                                           has_aux=True)(trainable, carry)
        return grads, carry_grad, aux

    def update(state, carry):
        if every == 1 or weight is None:
            return gradients(weight, state, carry), jnp.array(weight is not None)
        if penalised is not None:
            return (gradients(every * weight if penalised else None, state, carry),
                    jnp.array(penalised))
        chosen = _iterations(model, state[2]) % every == 0
        return jax.lax.cond(chosen, lambda: gradients(every * weight, state, carry),
                            lambda: gradients(None, state, carry)), chosen

    carry, finite_everywhere = model._initial_carry(x), jnp.array(True)
    for _ in range(model._replays()):
        (grads, carry_grad, aux), weighted = update(
            (trainable, non_trainable, optimizer_variables, metrics), carry)
        loss, y_pred, penalty, grad_norm, non_trainable, metrics = aux
        finite = model._finite(x, loss)
        trainable, optimizer_variables = jax.lax.cond(
            finite,
            lambda: model.optimizer.stateless_apply(optimizer_variables, grads, trainable),
            lambda: (list(trainable), list(optimizer_variables)))
        finite_everywhere = finite_everywhere & finite
        with keras.StatelessScope(state_mapping=list(zip(model.non_trainable_variables,
                                                         non_trainable))):
            carry = model._next_carry(carry, carry_grad)
    logs, metrics = _logs(model, metrics, x, y, y_pred, sample_weight,
                          (loss, penalty, grad_norm, weighted), finite_everywhere, training=True)
    return logs, (trainable, non_trainable, optimizer_variables, metrics)


def test_step(model, state, data) -> tuple:
    """GradRegModel.test_step: the objective in inference mode, and the metrics."""
    trainable, non_trainable, metrics = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    _, (loss, y_pred, penalty, grad_norm, non_trainable, metrics) = _objective(
        model, model.penalty_weight, False, trainable, non_trainable, metrics, None,
        x, y, sample_weight)
    weights = (*zip(model.trainable_variables, trainable),
               *zip(model.non_trainable_variables, non_trainable))
    logs, metrics = _logs(model, metrics, x, y, y_pred, sample_weight,
                          (loss, penalty, grad_norm, jnp.array(True)),
                          model._finite(x, loss), training=False, weights=weights)
    return logs, (trainable, non_trainable, metrics)


@contextlib.contextmanager
def keeps_variables(model):
    """Gives the model its variables back if `fit`/`evaluate` fails before a step ends.

    Keras' JAX trainer detaches the variables' values for the epoch (they live in the
    step's state) and reattaches them from the last finished step; an error in the
    first step (a bad loss, say) would leave the model without weights. The values are
    held (not copied: JAX arrays are immutable) and put back where detached; metric
    variables created by the failed call get zeros, the value every reset gives them.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built and model.built:
        optimizer.build(model.trainable_variables)  # as fit would: its state is kept too
    variables = list(model.variables) + list(getattr(optimizer, "variables", []))
    held = [(v, v._value) for v in variables + list(model.metrics_variables)]
    try:
        yield
    except BaseException:
        for variable, value in held:
            if variable._value is None:
                variable._value = value
        for variable in model.metrics_variables:
            if variable._value is None:
                variable._value = jnp.zeros(variable.shape, variable.dtype)
        raise


def lazy_train_function(model):
    """`fit`'s step function for penalty_every > 1 (what Keras' make_train_function makes):
    the penalised and the plain step compiled apart, one chosen per step on the host
    from the optimizer's iteration count in the state.

    A lax.cond between the two inside one compiled step is simpler, but XLA:CPU runs
    the ops inside a conditional's branches much slower than the same ops outside one
    (docs/cost.md). Reading the count waits for the previous step.
    """
    if not model.run_eagerly and model.jit_compile:
        shardings = None
        if keras.distribution.distribution() is not None:
            shardings = (None, model._get_state_sharding_spec())
        compile_step = functools.partial(jax.jit, donate_argnums=0, out_shardings=shardings)
    else:
        compile_step = lambda step: step  # noqa: E731
    steps = {p: compile_step(functools.partial(train_step, model, penalised=p)) for p in (True, False)}
    index = next(i for i, v in enumerate(model.optimizer.variables) if v is model.optimizer.iterations)

    def step(state, data):
        count = state[2][index]  # replicated: under keras.distribution, read a local copy
        count = count.addressable_data(0) if hasattr(count, "addressable_data") else count
        return steps[int(count) % model._step_weight()[1] == 0](state, data)

    return model._make_function(step)
