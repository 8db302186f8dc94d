"""GradRegModel: a keras.Model trained with the finite-difference input-gradient penalty."""

import math
from typing import Optional

import keras
import tensorflow as tf

from keras_gradreg import metrics as metrics_lib
from keras_gradreg import penalty as penalty_lib


def _validate_penalty_weight(penalty_weight: float) -> None:
    if isinstance(penalty_weight, bool) or not isinstance(penalty_weight, (int, float)):
        raise TypeError(f"penalty_weight={penalty_weight!r} must be a number >= 0.")
    if not 0.0 <= penalty_weight < math.inf:
        raise ValueError(
            f"penalty_weight={penalty_weight!r} must be finite and >= 0 "
            "(the paper uses 0.1 and 1)."
        )


def validate_penalty_every(penalty_every: int) -> None:
    """Raises ValueError unless penalty_every is an integer >= 1."""
    if isinstance(penalty_every, bool) or not isinstance(penalty_every, int) or penalty_every < 1:
        raise ValueError(
            f"penalty_every={penalty_every!r} must be an integer >= 1 (1 penalises every "
            "step; k penalises every k-th step with k * penalty_weight)."
        )


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


@keras.saving.register_keras_serializable(package="keras_gradreg")
class GradRegModel(keras.Model):
    """A Keras model whose `fit` minimises `loss + penalty_weight / 2 * ||grad_x loss||_*^2`.

    Build it like a functional model, `GradRegModel(inputs, outputs, penalty_weight=0.1)`,
    wrap an existing model with `GradRegModel.from_model(model, ...)`, or subclass it
    and define `call`. `compile`, `fit`, `evaluate` and `predict` work as usual; the
    compiled loss must be a single Keras loss (name, object or per-example function).

    Logs (training and `evaluate`, so the two compare): `loss` is the full objective,
    `penalty` the mean per-example penalty (unscaled by penalty_weight), `grad_norm` the
    mean dual norm ||grad_x loss||_* of the input gradient. `evaluate` runs the model
    in inference mode, but still takes the input gradient.

    Details, all following the authors' reference code unless stated:
    - the perturbed pass runs in the same mode as the clean one (training mode in
      `fit`, with batch statistics), uses the same dropout masks, and does not update
      BatchNorm moving averages (those track clean data only, as in plain training;
      the reference code also updates them on the perturbed batch);
    - integer inputs (uint8 pixels) are cast to float before differentiation, so `h`
      is in the input's own units; declare `keras.Input(..., dtype="float32")` and feed
      uint8 data if you like;
    - under mixed precision the losses and their difference are float32;
    - under a `tf.distribute` strategy the penalty is scaled like the compiled loss, so
      training on R replicas matches one device with the same global batch;
    - a NaN or Inf penalty stops `fit` with an InvalidArgumentError before the weights
      of that step are updated;
    - with `penalty_every=k > 1` ("lazy regularisation", Karras et al. 2020, Sec. 3.1)
      only every k-th training step (optimizer iterations 0, k, 2k, ...) computes the
      penalty, weighted by `k * penalty_weight`; the others are plain Keras steps. The
      `penalty` and `grad_norm` logs then average over the penalised steps only, and
      gradients of weights the loss does not reach are zeros rather than None.

    Args:
      penalty_weight: lambda, >= 0. At 0 the model trains exactly like `keras.Model`.
      h: finite-difference step, > 0, in input units.
      norm: penalised dual norm: "l2" (against l2 attacks), "l1" (the paper's squared
        l1 penalty, against l_inf attacks) or "linf" (against l1 attacks).
      difference: "forward" or "central".
      method: "finite_difference" or "double_backprop" (the exact, slower baseline).
      penalty_every: k >= 1; penalise every k-th step only, with weight k * lambda
        (a step then costs about (k + 1.2) / k plain steps on average).
      *args, **kwargs: as for `keras.Model` (e.g. `inputs`, `outputs`, `name`).
    """

    def __init__(
        self,
        *args,
        penalty_weight: float = 0.1,
        h: float = penalty_lib.DEFAULT_H,
        norm: str = "l2",
        difference: str = "forward",
        method: str = "finite_difference",
        penalty_every: int = 1,
        **kwargs,
    ):
        _validate_penalty_weight(penalty_weight)
        validate_penalty_every(penalty_every)
        penalty_lib.validate_options(h, norm, difference, method)
        super().__init__(*args, **kwargs)
        self.penalty_weight = float(penalty_weight)
        self.h = float(h)
        self.norm = norm
        self.difference = difference
        self.method = method
        self.penalty_every = penalty_every
        self._check_float_inputs()
        self._penalty_tracker = keras.metrics.Mean(name="penalty")
        self._grad_norm_tracker = keras.metrics.Mean(name="grad_norm")

    def _check_float_inputs(self) -> None:
        for tensor in getattr(self, "_inputs", None) or []:
            if not keras.backend.is_float_dtype(tensor.dtype):
                raise ValueError(
                    f"Input {tensor.name!r} is declared with dtype {tensor.dtype}; "
                    "GradRegModel perturbs inputs, so they must be float. Declare "
                    "keras.Input(..., dtype='float32') (uint8 pixel data is cast for you); "
                    "integer token ids into an Embedding cannot be regularised this way."
                )

    @classmethod
    def from_model(
        cls, model: keras.Model, input_shape: Optional[tuple] = None, **kwargs
    ) -> "GradRegModel":
        """Wraps an existing Sequential, functional or subclassed model.

        The new model shares the given model's layers and weights.

        Args:
          model: the model to wrap.
          input_shape: shape of one example, needed only for a subclassed model
            without `inputs`.
          **kwargs: GradRegModel arguments (penalty_weight, h, norm, difference,
            method, penalty_every, name).

        Returns:
          A GradRegModel computing the same function.
        """
        inputs, outputs = symbolic_io(model, input_shape)
        return cls(inputs=inputs, outputs=outputs, **kwargs)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            penalty_weight=self.penalty_weight,
            h=self.h,
            norm=self.norm,
            difference=self.difference,
            method=self.method,
            penalty_every=self.penalty_every,
        )
        return config

    def _objective(self, x, y, sample_weight, training: bool, penalty_weight: Optional[float]):
        """Returns y_pred and this replica's share of the objective; updates the trackers.

        With penalty_weight=None no input gradient is taken: a plain Keras step.
        """
        if self.loss is None:
            raise ValueError("GradRegModel needs a compiled loss: the penalty is its input gradient.")
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if penalty_weight is None:
            y_pred = self(x, training=training)
        else:
            loss_fn = penalty_lib.per_example_loss_fn(self.loss)
            clean = penalty_lib.clean_pass(self, x, y, loss_fn, training)
            y_pred = clean.outputs
        # The compiled loss is read before the perturbed passes, which reset the
        # layers' add_loss() losses.
        loss = self.compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )
        if penalty_weight is not None:
            penalty = self._penalty(clean, y, loss_fn, sample_weight, training)
            # Like Keras' compiled loss: mean over the local batch, divided by the number
            # of replicas, so that the gradients summed over replicas are the global mean's.
            loss = loss + tf.cast(penalty_weight / 2.0 / replicas * penalty, loss.dtype)
        batch = tf.shape(tf.nest.flatten(x)[0])[0]
        self._loss_tracker.update_state(loss * replicas, sample_weight=batch)
        return y_pred, loss

    def _penalty(self, clean, y, loss_fn, sample_weight, training: bool) -> tf.Tensor:
        """The local batch's sample-weighted mean penalty; updates penalty and grad_norm."""
        penalty = penalty_lib.penalty_from_clean_pass(
            self, clean, y, loss_fn, h=self.h, norm=self.norm,
            difference=self.difference, method=self.method, training=training,
        )
        penalty = tf.debugging.check_numerics(
            penalty,
            "keras_gradreg: the input-gradient penalty is NaN or Inf; stopped before this "
            "step could update any weight. Lower the learning rate or penalty_weight, or "
            "check the data for NaN",
        )
        self._penalty_tracker.update_state(penalty, sample_weight=sample_weight)
        grad_norm = penalty_lib.dual_norm(clean.gradient, self.norm)
        self._grad_norm_tracker.update_state(grad_norm, sample_weight=sample_weight)
        if sample_weight is not None:
            penalty = penalty * tf.reshape(tf.cast(sample_weight, penalty.dtype), [-1])
        return tf.reduce_mean(penalty)

    def _step_gradients(self, x, y, sample_weight, penalty_weight: Optional[float]) -> tuple:
        """(y_pred, gradients of the trainable weights) of one training step."""
        with tf.GradientTape() as tape:
            y_pred, loss = self._objective(x, y, sample_weight, True, penalty_weight)
            scaled = self.optimizer.scale_loss(loss)
        # The two branches of the lazy step's tf.cond must return tensors, not None.
        unconnected = "zero" if self.penalty_every > 1 else "none"
        gradients = tape.gradient(scaled, self.trainable_weights, unconnected_gradients=unconnected)
        return y_pred, gradients

    def train_step(self, data) -> dict:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self.penalty_every == 1:
            y_pred, gradients = self._step_gradients(x, y, sample_weight, self.penalty_weight)
        else:
            y_pred, gradients = tf.cond(
                tf.equal(self.optimizer.iterations % self.penalty_every, 0),
                lambda: self._step_gradients(
                    x, y, sample_weight, self.penalty_every * self.penalty_weight),
                lambda: self._step_gradients(x, y, sample_weight, None),
            )
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def compute_metrics(self, x, y, y_pred, sample_weight=None) -> dict:
        # The bound metrics (LipschitzBound, CurvatureBound) need the model and x.
        with metrics_lib.model_inputs(self, x):
            return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def test_step(self, data) -> dict:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred, _ = self._objective(x, y, sample_weight, False, self.penalty_weight)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
