"""GradRegModel: a keras.Model trained with the finite-difference input-gradient penalty."""

from typing import Any, Optional

import keras
from keras import ops

from keras_gradreg import backend
from keras_gradreg import deprecation
from keras_gradreg import penalty as penalty_lib
from keras_gradreg import per_example
from keras_gradreg import validation
from keras_gradreg.models.stepped import SteppedModel
from keras_gradreg.models.stepped import compiled_loss_fn


def check_penalty_weight(penalty_weight: float) -> float:
    """Returns lambda as a float; raises ValueError unless it is finite and >= 0."""
    return validation.check_number("penalty_weight", penalty_weight, low_open=False,
                                   hint="(the paper uses 0.1 and 1)")


def check_clean_weight(clean_weight: float) -> float:
    """Returns the clean loss's weight as a float; raises ValueError unless in (0, 1]."""
    return validation.check_number("clean_weight", clean_weight, high=1.0,
                                   hint="(1: the paper's; Rodriguez-Munoz et al. 2024 use 0.8)")


def check_penalty_warmup(penalty_warmup: int) -> int:
    """Returns the warm-up's steps as an int; raises ValueError unless an integer >= 0."""
    return validation.check_number("penalty_warmup", penalty_warmup, low_open=False,
                                   integer=True, hint="(0: the full weight from the first step)")


def check_penalty_every(penalty_every: int) -> int:
    """Returns k as an int; raises ValueError unless it is an integer >= 1."""
    return validation.check_number(
        "penalty_every", penalty_every, low=1, low_open=False, integer=True,
        hint="(1 penalises every step; k penalises every k-th step with k * penalty_weight)")


@keras.saving.register_keras_serializable(package="keras_gradreg")
class GradRegModel(SteppedModel):
    """A Keras model whose `fit` minimises `loss + penalty_weight / 2 * ||grad_x loss||_*^2`.

    Or, with `penalty_power=1`, `clean_weight * loss + penalty_weight * epsilon *
    ||grad_x loss||_*` (Rodriguez-Munoz, Wang & Torralba, ECCV 2024: clean_weight 0.8,
    penalty_weight 1.2 and a smooth activation such as GELU).

    Build it like a functional model, `GradRegModel(inputs, outputs, penalty_weight=0.1,
    attack_norm="linf")`, wrap an existing model with `GradRegModel.from_model(model,
    ...)`, or subclass it and define `call`. `compile`, `fit`, `evaluate` and `predict`
    work as usual; the compiled loss is one Keras loss (for every output) or one per
    output, with optional `loss_weights`.

    Logs (training and `evaluate`, so the two compare): `loss` is the full objective,
    `penalty` the batch mean of the sample-weighted per-example penalty (unscaled by
    penalty_weight; so loss = compiled loss + penalty_weight / 2 * penalty), `grad_norm`
    the same mean of the dual norm ||grad_x loss||_* of the input gradient, and
    `skipped_steps` the steps skipped as non-finite (see below). `evaluate` runs the
    model in inference mode, but still takes the input gradient. Bound metrics
    (`LipschitzBound`, `CurvatureBound`) are computed in `evaluate` and validation only.

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
    - a step whose inputs or objective are NaN or Inf updates nothing (weights and
      optimizer state stay as they were; this holds under XLA and on every replica),
      is counted in `skipped_steps`, and `fit`/`evaluate` then stop with a
      FloatingPointError naming the batch;
    - `penalty_weight=0` trains with the plain Keras step (no input gradient);
    - with `penalty_every=k > 1` ("lazy regularisation", Karras et al. 2020, Sec. 3.1)
      only every k-th training step (optimizer iterations 0, k, 2k, ...) computes the
      penalty, weighted by `k * penalty_weight`; the others are plain Keras steps. The
      `penalty` and `grad_norm` logs then average over the penalised steps only, and
      gradients of weights the loss does not reach are zeros rather than None.

    Args:
      penalty_weight: lambda, >= 0. At 0 the model trains exactly like `keras.Model`.
      h: finite-difference step, > 0, in input units.
      attack_norm: the attack to defend against, which fixes the penalised (dual)
        norm: "linf" (the paper's squared l1 penalty), "l2" (squared l2) or "l1"
        (squared l_inf). `dual_norm` tells which.
      difference: "forward" or "central".
      estimator: "finite_difference" or "double_backprop" (the exact, slower baseline).
      penalty_every: k >= 1; penalise every k-th step only, with weight k * lambda
        (a step then costs about (k + 1.2) / k plain steps on average).
      penalty_power: 2, the paper's squared dual norm, or 1, the dual norm itself times
        epsilon, its finite difference along a unit step in the attack norm
        (penalty.PENALTY_POWERS).
      epsilon: the attack's radius, in input units, scaling the unsquared penalty
        (needed with penalty_power 1, refused with 2).
      clean_weight: the compiled loss's weight, in (0, 1], on every step.
      penalty_warmup: steps over which the penalty's weight rises linearly from 0 (at
        optimizer step i, in training, penalty_weight * min(1, (i + 1) / penalty_warmup));
        0, the default, is the full weight from the first step. A deep BatchNorm network
        trained from scratch can start with input gradients hundreds of times those it
        trains to (docs/guides/penalty.md), which the squared penalty makes explode.
      *args: as for `keras.Model` (`inputs`, `outputs`).
      **kwargs: as for `keras.Model` (`inputs`, `outputs`, `name`).
    """

    def __init__(
        self,
        *args,
        penalty_weight: float = 0.1,
        h: float = penalty_lib.DEFAULT_H,
        attack_norm: Optional[str] = None,
        difference: str = "forward",
        estimator: str = "finite_difference",
        penalty_every: int = 1,
        penalty_power: int = 2,
        epsilon: Optional[float] = None,
        clean_weight: float = 1.0,
        penalty_warmup: int = 0,
        **kwargs,
    ):
        kwargs = deprecation.renamed_arguments("GradRegModel", kwargs)
        estimator = kwargs.pop("estimator", estimator)
        attack_norm = penalty_lib.default_attack_norm("GradRegModel", attack_norm)
        penalty_weight = check_penalty_weight(penalty_weight)
        penalty_every = check_penalty_every(penalty_every)
        clean_weight = check_clean_weight(clean_weight)
        penalty_warmup = check_penalty_warmup(penalty_warmup)
        h, epsilon = penalty_lib.check_options(h, attack_norm, difference, estimator,
                                                  penalty_power, epsilon)
        super().__init__(*args, **kwargs)
        self.penalty_weight = penalty_weight
        self.h = h
        self.attack_norm = attack_norm
        self.difference = difference
        self.estimator = estimator
        self.penalty_every = penalty_every
        self.penalty_power = penalty_power
        self.epsilon = epsilon
        self.clean_weight = clean_weight
        self.penalty_warmup = penalty_warmup

    @property
    def dual_norm(self) -> str:
        """The penalised gradient norm: the dual of attack_norm ("l1" against "linf")."""
        return per_example.DUAL_NORMS[self.attack_norm]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            penalty_weight=self.penalty_weight,
            h=self.h,
            attack_norm=self.attack_norm,
            difference=self.difference,
            estimator=self.estimator,
            penalty_every=self.penalty_every,
            penalty_power=self.penalty_power,
            epsilon=self.epsilon,
            clean_weight=self.clean_weight,
            penalty_warmup=self.penalty_warmup,
        )
        return config

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> "GradRegModel":
        config = deprecation.upgrade_config("GradRegModel", config)
        return super().from_config(config, custom_objects=custom_objects)

    def _step_weight(self) -> tuple:
        """(the penalty weight of a penalised step, or None for the plain step; k)."""
        return self.penalty_weight or None, self.penalty_every  # lambda = 0: plain Keras

    def _objective(self, x, y, sample_weight, training: bool, penalty_weight: Optional[float],
                   carry: Any = None):
        """(y_pred, this replica's share of the objective, penalty, grad_norm) of a batch.

        With penalty_weight=None no input gradient is taken (a plain Keras step) and
        penalty and grad_norm are 0. The backend's train_step differentiates it.
        """
        per_example.require_targets(y)
        loss_fn = compiled_loss_fn(self)
        replicas = backend.current().num_replicas()
        if penalty_weight is None:
            y_pred = self(x, training=training)
        else:
            clean = backend.clean_pass(self, x, y, loss_fn, training,
                                       differentiable=self.estimator == "double_backprop")
            y_pred = clean.outputs
            # add_loss/regulariser losses of the clean pass, where they cannot live on
            # the layers (JAX), as Keras' own JAX trainer passes them.
            self._losses_override = clean.losses or []
        # The compiled loss is read before the perturbed passes, which reset the
        # layers' add_loss() losses.
        try:
            loss = self.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
            )
        finally:
            self._losses_override = []
        if self.clean_weight != 1.0:
            loss = self.clean_weight * loss
        if penalty_weight is None:
            return y_pred, loss, ops.zeros((), loss.dtype), ops.zeros((), loss.dtype)
        penalty, grad_norm = self._penalty(clean, y, loss_fn, sample_weight, training)
        # Like Keras' compiled loss: mean over the local batch, divided by the number
        # of replicas, so that the gradients summed over replicas are the global mean's.
        factor = penalty_lib.PENALTY_FACTORS[self.penalty_power] * penalty_weight / replicas
        if training and self.penalty_warmup:
            factor = factor * self._warmup_share(penalty.dtype)
        loss = loss + ops.cast(factor * penalty, loss.dtype)
        return y_pred, loss, ops.cast(penalty, loss.dtype), ops.cast(grad_norm, loss.dtype)

    def _warmup_share(self, dtype: str) -> Any:
        """min(1, (optimizer step + 1) / penalty_warmup), the warm-up's share of the weight."""
        step = ops.cast(self.optimizer.iterations + 1, dtype)
        return ops.minimum(ops.cast(1.0, dtype), step / float(self.penalty_warmup))

    def _penalty(self, clean, y, loss_fn, sample_weight, training: bool) -> tuple:
        """The local batch's mean penalty and grad_norm, sample-weighted like the loss."""
        penalty = penalty_lib.penalty_from_clean_pass(
            self, clean, y, loss_fn, h=self.h, attack_norm=self.attack_norm,
            difference=self.difference, estimator=self.estimator, training=training,
            penalty_power=self.penalty_power, epsilon=self.epsilon,
        )
        grad_norm = ops.cast(per_example.dual_norm(clean.gradient, self.attack_norm), penalty.dtype)
        if sample_weight is not None:
            weight = ops.reshape(ops.cast(sample_weight, penalty.dtype), (-1,))
            penalty, grad_norm = penalty * weight, grad_norm * weight
        return ops.mean(penalty), ops.mean(grad_norm)

    def test_step(self, *args):
        return backend.current().test_step(self, *args)
