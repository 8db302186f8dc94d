"""GradRegModel's steps and the attacks' gradients on the PyTorch backend: torch.autograd.

PyTorch runs eagerly: a step is Python, its decisions (a finite batch, the lazy
schedule's turn) are taken on the host, and one process trains on one device (no
distribution strategy).
"""

import contextlib
import functools
from typing import Optional

import keras
import numpy as np
import torch

from keras_gradreg import per_example

COMPILES_STEPS = False
"""Whether `fit` may compile the steps: not with torch.compile, which cannot
differentiate an input gradient again (aot_autograd has no double backward) and, in
torch 2.13, reused one model's compiled step for the next model's non-finite batch."""

PADDING = "none"
"""How the attacks pad their batches (attacks.registry.padded_size): not at all, as eager
PyTorch takes any size."""


SPLITS_BATCHES = False
"""Whether the attacks split a batch over the CPU cores (attacks.registry.batch_parts):
no, PyTorch's operations use its intra-op threads, one per core by default."""


def distribution_scope(strategy: str):
    """The scope a run builds and fits in: none (training.check_processes allows only
    strategy "default" here)."""
    del strategy
    return contextlib.nullcontext()


def replica_position() -> tuple:
    """(1, 0): one process, one device."""
    return 1, 0


def num_replicas() -> int:
    """1: the compiled loss is the batch's mean."""
    return 1


def replica_mean(value):
    """Itself: one replica."""
    return value


def _draw(sample: str, shape, seed, dtype, **kwargs) -> torch.Tensor:
    """NumPy's `sample` (a Generator method) of `shape`, as a tensor on Keras' device in
    `dtype`: a function of seed ((2,) integers) only, every pair its own stream (torch's
    CPU generator keeps 32 bits of a seed)."""
    pair = [int(s) & 0xFFFFFFFF for s in np.asarray(keras.ops.convert_to_numpy(seed)).reshape(-1)]
    draws = getattr(np.random.default_rng(pair), sample)(size=tuple(int(s) for s in shape), **kwargs)
    return keras.ops.convert_to_tensor(draws, dtype)


def stateless_uniform(shape, seed, minval: float, maxval: float, dtype):
    """Uniform draws in [minval, maxval), a function of seed ((2,) integers) only."""
    return _draw("uniform", shape, seed, dtype, low=minval, high=maxval)


def stateless_normal(shape, seed, dtype):
    """Standard normal draws, a function of seed ((2,) integers) only."""
    return _draw("standard_normal", shape, seed, dtype)


def snapshot(model) -> list:
    """(variable, value) pairs of the model's state now, for a `keras.StatelessScope` that
    runs a pass with it and leaves no trace: its non-trainable variables (the trainable
    ones are read live, as on TensorFlow)."""
    return [(v, v.value.detach().clone()) for v in getattr(model, "non_trainable_variables", [])]


def _watched(t: torch.Tensor) -> torch.Tensor:
    """t itself if it is part of a graph already (its gradient then flows on), else a
    copy that gradients are taken with respect to."""
    return t if t.requires_grad else t.detach().requires_grad_(True)


def clean_pass(model, x, y, loss_fn, training: bool,
               differentiable: bool = False) -> per_example.CleanPass:
    """penalty.clean_pass with torch.autograd.grad, recording the input gradient's own
    graph where it is `differentiable` (double backpropagation, GradAlign); the perturbed
    passes reset the non-trainable variables to their values before it."""
    state = snapshot(model)
    recording = torch.is_grad_enabled()  # a train step's (evaluate runs without)
    with torch.enable_grad():
        flat_x = [_watched(per_example.as_float(keras.ops.convert_to_tensor(t)))
                  for t in keras.tree.flatten(x)]
        outputs = model(keras.tree.pack_sequence_as(x, flat_x), training=training)
        loss = loss_fn(y, outputs)
        grads = torch.autograd.grad(torch.sum(loss), flat_x, allow_unused=True,
                                    retain_graph=recording,  # the objective's gradient follows
                                    create_graph=differentiable and recording)
    return per_example.clean_pass_record(flat_x, grads, outputs, loss, state, x)


def value_and_gradient(fn, x) -> tuple:
    """(values, aux, gradient): fn(x) -> (per-example values, aux), and the gradient of
    the values' sum with respect to x (shaped like x), with torch.autograd.grad; the
    gradient is differentiable where x is part of a graph."""
    x = keras.ops.convert_to_tensor(x)
    outer = x.requires_grad  # differentiated again by whoever watches x
    with torch.enable_grad():
        x = _watched(x)
        values, aux = fn(x)
        (gradient,) = torch.autograd.grad(torch.sum(values), [x], create_graph=outer)
    return values, aux, gradient


def compiled(fn):
    """fn without recording gradients (an attack, the verifications' logits: the input
    gradients they take record their own), eager: PyTorch compiles nothing here. NumPy
    arguments become tensors, as a compiled function's do on the other backends."""

    @functools.wraps(fn)
    def run(*args):
        args = [keras.ops.convert_to_tensor(a) if isinstance(a, np.ndarray) else a for a in args]
        with torch.no_grad():
            return fn(*args)

    return run


def fused(fn):
    """fn itself: eager."""
    return fn


def in_trace(x) -> bool:
    """Whether x is being differentiated (PyTorch traces nothing: a function called
    with it runs inline, recording, not through `compiled`'s torch.no_grad)."""
    return isinstance(x, torch.Tensor) and x.requires_grad


def has_gpu() -> bool:
    """Whether PyTorch sees a GPU."""
    return torch.cuda.is_available()


def keeps_variables(model):
    """Nothing to do: PyTorch's `fit` updates the variables in place."""
    del model
    return contextlib.nullcontext()


def _step(model, x, y, sample_weight, penalty_weight, carry) -> tuple:
    """(y_pred, weight gradients, objective, penalty, grad_norm, the carry's gradient or
    None) of one update."""
    if carry is not None:
        carry = carry.detach().requires_grad_(True)
    y_pred, loss, penalty, grad_norm = model._objective(x, y, sample_weight, True,
                                                        penalty_weight, carry)
    weights = [v.value for v in model.trainable_weights]
    sources = weights + ([] if carry is None else [carry])
    gradients = torch.autograd.grad(model.optimizer.scale_loss(loss), sources,
                                    allow_unused=True)
    gradients = [torch.zeros_like(s) if g is None else g for g, s in zip(gradients, sources)]
    carry_gradient = None if carry is None else gradients[-1]
    return y_pred, gradients[:len(weights)], loss, penalty, grad_norm, carry_gradient


def train_step(model, data, penalised: Optional[bool] = None) -> dict:
    """SteppedModel.train_step: one penalised (or, between lazy steps, plain) update, or
    `model._replays()` updates on the batch, each carrying what the last one gave; a
    lazy step's turn is read on the host from the optimizer's iteration count."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    weight, every = model._step_weight()
    carry, finite_everywhere = model._initial_carry(x), True
    for _ in range(model._replays()):
        if penalised is None:
            turn = every == 1 or int(keras.ops.convert_to_numpy(model.optimizer.iterations)) % every == 0
        else:
            turn = penalised
        step_weight = None if weight is None or not turn else every * weight
        y_pred, gradients, loss, penalty, grad_norm, carry_gradient = _step(
            model, x, y, sample_weight, step_weight, carry)
        finite = bool(keras.ops.convert_to_numpy(model._finite(x, loss)))
        if finite:
            with torch.no_grad():
                model.optimizer.apply(gradients, model.trainable_weights)
        finite_everywhere = finite_everywhere and finite
        carry = model._next_carry(carry, carry_gradient)
    weighted = torch.tensor(step_weight is not None)
    finite_everywhere = torch.tensor(finite_everywhere)
    with torch.no_grad():
        model._track(x, loss, penalty, grad_norm, weighted, finite_everywhere)
        return _own(model._logs(x, y, y_pred, sample_weight, training=True,
                                finite=finite_everywhere))


def _own(logs: dict) -> dict:
    """The logs as tensors of their own: a metric's result may be its variable's tensor,
    which the next step updates in place while an async callback has yet to read it."""
    return {name: value.detach().clone() if isinstance(value, torch.Tensor) else value
            for name, value in logs.items()}


def test_step(model, data) -> dict:
    """GradRegModel.test_step: the objective in inference mode, and the metrics."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    y_pred, loss, penalty, grad_norm = model._objective(x, y, sample_weight, False,
                                                        model.penalty_weight)
    finite = model._finite(x, loss)
    model._track(x, loss, penalty, grad_norm, torch.tensor(True), finite)
    return _own(model._logs(x, y, y_pred, sample_weight, training=False, finite=finite))


def lazy_train_function(model):
    """`fit`'s step function for penalty_every > 1: Keras' own (the step reads its turn)."""
    model.train_function = None
    keras.Model.make_train_function(model)
    return model.train_function
