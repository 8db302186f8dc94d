"""SteppedModel: the contract between a model's objective, written once in keras.ops, and
the backend modules that take its training step (keras_gradreg/backend/)."""

from typing import Any, Optional

import keras
from keras import ops

from keras_gradreg import backend
from keras_gradreg import metric_inputs
from keras_gradreg import per_example


def symbolic_io(model: keras.Model, input_shape: Optional[tuple] = None) -> tuple:
    """A model's symbolic (inputs, outputs), to build a functional model that shares it.

    Sequential and functional models give theirs (keeping their nesting); a subclassed
    model is called on `keras.Input(input_shape)`.
    """
    if isinstance(model, keras.Sequential) and model.inputs:
        return model.inputs[0], model.outputs[0]
    try:
        return model.input, model.output
    except (AttributeError, ValueError):  # a subclassed model has no symbolic graph
        pass
    if input_shape is None:
        raise ValueError(
            f"Model {model.name!r} has no symbolic inputs (a subclassed model); pass "
            "input_shape=, the shape of one example, e.g. input_shape=(28, 28, 1)."
        )
    inputs = keras.Input(shape=tuple(input_shape))
    return inputs, model(inputs)


class WrapsModel:
    """Adds `from_model` to a keras.Model subclass built like a functional model."""

    @classmethod
    def from_model(cls, model: keras.Model, input_shape: Optional[tuple] = None, **kwargs):
        """Wraps an existing Sequential, functional or subclassed model.

        The new model shares the given model's layers and weights.

        Args:
          model: the model to wrap.
          input_shape: shape of one example, needed only for a subclassed model
            without `inputs`.
          **kwargs: the class's own arguments (and `name`).

        Returns:
          A model of this class computing the same function.
        """
        inputs, outputs = symbolic_io(model, input_shape)
        return cls(inputs=inputs, outputs=outputs, **kwargs)


def compiled_loss_fn(model: keras.Model) -> per_example.LossFn:
    """A compiled model's loss, per example, with its loss weights (read when a step is
    traced): what the penalty differentiates and adversarial training ascends."""
    if model.loss is None:
        raise ValueError(f"{type(model).__name__} needs a compiled loss: the penalty (or the "
                         "attack) is its input gradient.")
    # compile() keeps its arguments there; get_compile_config() would serialise the
    # optimizer, which cannot run while the step is traced.
    loss, weights = model.loss, model._compile_config.config.get("loss_weights")
    names = list(getattr(model, "output_names", None) or [])
    if isinstance(loss, dict):
        loss = [loss[name] for name in names]
    if isinstance(weights, dict):
        weights = [weights.get(name, 1.0) for name in names]
    return per_example.loss_fn(loss, weights)


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops `fit`/`evaluate` at the first batch GradRegModel skipped as non-finite.

    GradRegModel adds it itself. The skip happens inside the step (so it holds under
    XLA and on every replica); this callback turns the count into an error that names
    the batch. It is `async_safe`: where Keras runs batch callbacks off the training
    thread (JAX), reading the count does not make every step wait for the previous one
    (docs/cost.md), and the error stops `fit` a few batches after the skipped one, or at
    the end of the epoch.
    """

    async_safe = True

    def _check(self, where: str, logs: Optional[dict]) -> None:
        if (logs or {}).get("skipped_steps", 0) > 0:
            raise FloatingPointError(
                f"keras_gradreg: {where}: the inputs or the objective (loss + penalty) were "
                "NaN or Inf, so that step updated nothing (weights and optimizer state are "
                "as before it). Check the data for NaN/Inf, or lower the learning rate or "
                "penalty_weight."
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._check(f"training batch {batch} of epoch {getattr(self, '_epoch', 0)}", logs)

    def on_test_batch_end(self, batch, logs=None):
        self._check(f"evaluation batch {batch}", logs)


def _check_targets(x, y) -> None:
    """Raises before training if fit gets arrays, or a tf.data dataset, without targets,
    or targets that are not numbers."""
    if y is not None:
        per_example.check_numeric_labels(y)
        return
    spec = getattr(x, "element_spec", None)
    if spec is not None:
        if not (isinstance(spec, tuple) and len(spec) >= 2):
            per_example.require_targets(None)
    elif not callable(getattr(x, "__getitem__", None)) or not hasattr(x, "__len__"):
        return  # a generator or PyDataset: its batches are checked when traced
    elif not hasattr(x, "num_batches"):  # arrays (a PyDataset has num_batches)
        per_example.require_targets(None)


def _with_guard(callbacks) -> list:
    if isinstance(callbacks, keras.callbacks.CallbackList):  # fit's, for validation
        return callbacks
    callbacks = list(callbacks or [])
    return callbacks + ([] if any(isinstance(c, NonFiniteGuard) for c in callbacks)
                        else [NonFiniteGuard()])


class SteppedModel(WrapsModel, keras.Model):
    """A keras.Model whose training step the backend modules take from its objective.

    The contract between a model and keras_gradreg/backend/{tensorflow,jax}.py, which
    alone know how a weight gradient is taken, how a skipped step is skipped and how
    replicas agree. A subclass supplies the mathematics, once, in keras.ops:

    - `_objective(x, y, sample_weight, training, weight, carry)` -> `(y_pred, loss,
      first, second)`: this replica's share of the objective (Keras' compiled loss is
      already divided by the replicas; divide what you add by
      `backend.current().num_replicas()`) and the two per-batch values logged under
      `STEP_LOGS`. `weight` is what `_step_weight()` gave: None asks for the plain step.
      Inside it the model's variables and the optimizer's iteration count read as the
      step's values on every backend, and non-trainable variables it assigns are kept
      (JAX returns them from the step).
    - `_step_weight()` -> `(weight or None, every)`: every > 1 makes only every
      `every`-th step (optimizer iterations 0, every, ...) call `_objective` with
      `every * weight`, the others with None (one dispatcher, `make_train_function`).
    - `_replays()` -> m (default 1): the updates a train step makes on its batch. The
      first gets `carry=_initial_carry(x)` (default None); with a carry, the backend
      differentiates the objective with respect to it as well as to the weights, and
      `_next_carry(carry, its gradient)` is the next update's (free adversarial
      training: the perturbation, grown along the input gradient). The step is skipped
      as non-finite, and counted, if any of its updates was.

    The base class provides what the backend modules call around it: `_finite` (the
    batch's inputs and objective are finite), `_track` (the loss and STEP_LOGS
    trackers, finite batches only, and `skipped_steps`) and `_logs` (the step's logs).
    Private Keras APIs the backends rely on are listed, with the versions checked, in
    `keras_gradreg.backend.PRIVATE_KERAS_APIS`.
    """

    STEP_LOGS = ("penalty", "grad_norm")
    """Names of the two values `_objective` returns after the loss, as logged."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_float_inputs()
        self._step_trackers = [keras.metrics.Mean(name=name) for name in self.STEP_LOGS]
        self._skipped_tracker = keras.metrics.Sum(name="skipped_steps")

    def _check_float_inputs(self) -> None:
        for tensor in getattr(self, "_inputs", None) or []:
            if not keras.backend.is_float_dtype(tensor.dtype):
                raise ValueError(
                    f"Input {tensor.name!r} is declared with dtype {tensor.dtype}; "
                    f"{type(self).__name__} perturbs inputs, so they must be float. Declare "
                    "keras.Input(..., dtype='float32') (uint8 pixel data is cast for you); "
                    "integer token ids into an Embedding cannot be perturbed this way."
                )

    def _objective(self, x, y, sample_weight, training: bool, weight: Optional[float],
                   carry: Any = None):
        raise NotImplementedError

    def _step_weight(self) -> tuple:
        raise NotImplementedError

    def _replays(self) -> int:
        return 1

    def _initial_carry(self, x) -> Any:
        del x
        return None

    def _next_carry(self, carry: Any, gradient: Any) -> Any:
        del gradient
        return carry

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            **kwargs):
        _check_targets(x, y)
        with backend.current().keeps_variables(self):
            return super().fit(x, y, batch_size, epochs, verbose, _with_guard(callbacks), **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None,
                 steps=None, callbacks=None, **kwargs):
        with backend.current().keeps_variables(self):
            return super().evaluate(x, y, batch_size, verbose, sample_weight, steps,
                                    _with_guard(callbacks), **kwargs)

    @staticmethod
    def _finite(x, loss):
        """Whether the inputs and the objective of this replica's batch are all finite."""
        flags = [ops.all(ops.isfinite(t)) for t in keras.tree.flatten(x)
                 if keras.backend.is_float_dtype(keras.backend.standardize_dtype(t.dtype))]
        return ops.all(ops.stack(flags + [ops.all(ops.isfinite(loss))]))

    def _track(self, x, loss, first, second, weighted, finite) -> None:
        """Updates the trackers with finite batches only (`finite` as agreed by all
        replicas), the STEP_LOGS ones only on `weighted` steps, and counts the others
        in skipped_steps."""
        replicas = backend.current().num_replicas()
        batch = ops.shape(keras.tree.flatten(x)[0])[0]
        counted = ops.where(finite, batch, 0)
        self._loss_tracker.update_state(ops.where(finite, loss * replicas, 0.0),
                                        sample_weight=counted)
        counted = ops.where(weighted, counted, 0)
        for tracker, value in zip(self._step_trackers, (first, second)):
            tracker.update_state(ops.where(finite, value, 0.0), sample_weight=counted)
        self._skipped_tracker.update_state(ops.cast(ops.logical_not(finite), "float32") / replicas)

    def _logs(self, x, y, y_pred, sample_weight, training: bool, finite: Any = True) -> dict:
        """The step's logs; in training without the bound metrics (evaluation-only)
        and, for the plain step, without the STEP_LOGS. Where the step was skipped as
        non-finite (`finite` False), its loss and STEP_LOGS read NaN, not the 0 of an
        empty mean: a custom loop (`train_on_batch`) sees what happened."""
        if not training:
            logs = self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        else:
            with metric_inputs.paused():
                logs = super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)
            hidden = metric_inputs.metric_names(self)
            if self._step_weight()[0] is None:
                hidden += list(self.STEP_LOGS)
            logs = {name: value for name, value in logs.items() if name not in hidden}
        skipped = ("loss",) + tuple(self.STEP_LOGS)
        return {name: ops.where(finite, value, float("nan")) if name in skipped else value
                for name, value in logs.items()}

    def train_step(self, *args):
        """One update (see keras_gradreg/backend/ for how each backend takes it)."""
        return backend.current().train_step(self, *args)

    def _check_step_compilation(self) -> None:
        """A ValueError, before the first step, if the backend cannot compile the steps."""
        if self.jit_compile and not backend.current().COMPILES_STEPS:
            raise ValueError(
                f"{type(self).__name__} was compiled with jit_compile=True; on the "
                f"{keras.backend.backend()} backend its steps run eagerly. Compile it with "
                "jit_compile=False or 'auto' (the default, eager on PyTorch).")

    def make_test_function(self, force=False):
        self._check_step_compilation()
        return super().make_test_function(force)

    def make_train_function(self, force=False):
        self._check_step_compilation()
        weight, every = self._step_weight()
        lazy = every > 1 and weight is not None
        if not lazy or (self.train_function is not None and not force):
            return super().make_train_function(force)
        self.train_function = backend.current().lazy_train_function(self)

    def compute_metrics(self, x, y, y_pred, sample_weight=None) -> dict:
        # The bound metrics (LipschitzBound, CurvatureBound) need the model and x.
        with metric_inputs.model_inputs(self, x):
            return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)
