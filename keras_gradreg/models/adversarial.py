"""Adversarial training on one model: PGD-AT (Madry et al., ICLR 2018), FGSM from a random
start (Wong, Rice & Kolter, ICLR 2020) and N-FGSM (de Jorge et al., NeurIPS 2022), with
an optional regulariser (keras_gradreg.regularizers: ELLE, ELLE-A, the finite-difference
penalty, GradAlign, TRADES), on TensorFlow (also under MirroredStrategy) and JAX (also
on several processes)."""

import math
from typing import Any, Optional

import keras
from keras import ops

from keras_gradreg import backend
from keras_gradreg import deprecation
from keras_gradreg import penalty as penalty_lib
from keras_gradreg import per_example
from keras_gradreg import regularizers
from keras_gradreg import validation
from keras_gradreg.attacks import ball
from keras_gradreg.attacks import pgd
from keras_gradreg.models.stepped import SteppedModel
from keras_gradreg.models.stepped import compiled_loss_fn


class Threat:
    """What a model trained against attacks holds: the ball (its norm, its radius at full
    strength and now, which `EpsilonRamp` raises) within the data range, and the seed of
    its random draws."""

    def _init_threat(self, epsilon: float, attack_norm: str, clip_min: float, clip_max: float,
                     seed: int) -> None:
        ball.check_norm(attack_norm)
        clip_min = validation.check_number("clip_min", clip_min, low=-math.inf)
        clip_max = validation.check_number("clip_max", clip_max, low=clip_min)
        size = None
        if getattr(self, "inputs", None) and all(d is not None for d in self.inputs[0].shape[1:]):
            size = math.prod(self.inputs[0].shape[1:])
        self.epsilon = ball.check_epsilon(epsilon, attack_norm, clip_min, clip_max, size)
        self.attack_norm, self.clip_min, self.clip_max = attack_norm, clip_min, clip_max
        self.seed = validation.check_number("seed", seed, low_open=False, integer=True)
        self.current_epsilon = keras.Variable(self.epsilon, trainable=False, name="current_epsilon")

    def _step_seed(self, stream: int = 0) -> Any:
        """(seed, optimizer step): the same draw for the same step, resumed or not;
        stream > 0 for a step's further independent draws."""
        seed = ops.stack([ops.convert_to_tensor(self.seed, "int32"),
                          ops.cast(self.optimizer.iterations, "int32")])
        return ball.seed_stream(seed, stream)

    def _threat_config(self) -> dict:
        return dict(epsilon=self.epsilon, attack_norm=self.attack_norm, clip_min=self.clip_min,
                    clip_max=self.clip_max, seed=self.seed)


@keras.saving.register_keras_serializable(package="keras_gradreg")
class AdversarialTrainingModel(Threat, SteppedModel):
    """Trains on adversarial examples of each batch, l_inf or l2, optionally regularised.

    Built like a functional model (`AdversarialTrainingModel(inputs, outputs,
    epsilon=0.3)`) or with `from_model`. Each step makes the batch's examples with `attack`
    (PGD and its one-step cases, in inference mode, ascending the compiled loss from a
    random start drawn from (seed, optimizer step)), trains on them, and adds
    `regularizer_weight` times a regulariser (keras_gradreg.regularizers). The radius is
    `current_epsilon`, which `EpsilonRamp` raises from 0 to `epsilon` over the first
    epochs (without a ramp a small network can collapse to chance at MNIST's 0.3).

    | attack | steps | step, x epsilon | random start, x epsilon | projected | source |
    | --- | --- | --- | --- | --- | --- |
    | "pgd" | 7 | 1.75 / steps | 1 | yes | Madry et al. 2018; the paper's baseline |
    | "fgsm_rs" | 1 | 1.25 | 1 | yes | Wong et al. 2020 |
    | "n_fgsm" | 1 | 1 | 2 | no | de Jorge et al. 2022 |

    TRADES is `attack="pgd", regularizer="trades"` with its own steps, step and start
    (regularizers.trades): the compiled loss on the clean batch, the examples ascending
    the divergence from the clean prediction.

    The regulariser's passes run in training mode and leave no trace (BatchNorm
    statistics follow the batch the compiled loss is taken on). `evaluate` reports the
    clean loss (Keras' own test step). The logs add `regularizer` (its batch mean,
    unweighted) and `regularizer_weight` (the weight it was applied with: ELLE-A's
    changes). Every random draw is a function of (seed, optimizer step), and a
    regulariser's state is the model's, so a resumed run ends where an uninterrupted one
    would.

    Args:
      epsilon: the radius at full strength.
      attack_norm: "linf" (sign steps, box projection) or "l2" (normalised-gradient
        steps, a random start uniform in the l2 ball, projection onto it).
      attack: "pgd", "fgsm_rs" or "n_fgsm" (pgd.VARIANTS).
      steps: PGD's steps (None: the attack's; the one-step attacks take 1).
      step_size: each step, a multiple of epsilon (None: the attack's).
      start: the random start's radius, a multiple of epsilon (None: the attack's).
      regularizer: one of regularizers.NAMES.
      regularizer_weight: its weight (TRADES' beta), > 0 with a regulariser, 0 without.
      h: the finite difference's step of the "gradient_penalty" regulariser.
      clip_min: the data range's lowest value.
      clip_max: the data range's highest value.
      seed: seeds the random draws (with the optimizer step).
      *args: as for `keras.Model`.
      **kwargs: as for `keras.Model`.
    """

    STEP_LOGS = ("regularizer", "regularizer_weight")

    def __init__(self, *args, epsilon: float = 0.3, attack_norm: str = per_example.DEFAULT_ATTACK_NORM,
                 attack: str = "pgd", steps: Optional[int] = None,
                 step_size: Optional[float] = None, start: Optional[float] = None,
                 regularizer: str = "none", regularizer_weight: float = 0.0,
                 h: float = penalty_lib.DEFAULT_H, clip_min: float = 0.0, clip_max: float = 1.0,
                 seed: int = 0, **kwargs):
        validation.check_choice("attack", attack, tuple(pgd.VARIANTS))
        variant = pgd.VARIANTS[attack]
        if steps is not None:
            steps = validation.check_number("steps", steps, low=1, low_open=False, integer=True)
            if steps != variant.steps and attack != "pgd":
                raise ValueError(f"steps={steps!r}: attack={attack!r} takes one step; "
                                 "attack='pgd' takes several.")
        for name, value in (("step_size", step_size), ("start", start)):
            if value is not None:
                validation.check_number(name, value, low_open=name == "step_size")
        regularizer_weight = regularizers.check(regularizer, regularizer_weight)
        h = validation.check_number("h", h)
        super().__init__(*args, **kwargs)
        self._init_threat(epsilon, attack_norm, clip_min, clip_max, seed)
        self.attack, self.steps, self.step_size, self.start = attack, steps, step_size, start
        self.regularizer, self.regularizer_weight, self.h = regularizer, regularizer_weight, h
        self._regularizer = regularizers.get(regularizer)
        if self._regularizer is not None:
            self._regularizer.build(self)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(attack=self.attack, steps=self.steps, step_size=self.step_size,
                      start=self.start, regularizer=self.regularizer,
                      regularizer_weight=self.regularizer_weight, h=self.h,
                      **self._threat_config())
        return config

    def _step_weight(self) -> tuple:
        return self.regularizer_weight or None, 1

    def _pgd_settings(self) -> dict:
        """The attack's steps, step size, start and projection, with this model's choices."""
        variant = pgd.VARIANTS[self.attack]
        steps = self.steps or variant.steps
        step_size = self.step_size
        if step_size is None:
            step_size = variant.step_size or pgd.step_for_reach(steps, pgd.TRAINING_REACH)
        start = variant.start if self.start is None else self.start
        return dict(steps=steps, step_size=step_size, start=start, projected=variant.projected)

    def adversarial_examples(self, x: Any, y: Any) -> Any:
        """The training examples of the batch x within current_epsilon, against targets y,
        as the next training step would make them."""
        x = per_example.as_float(x)
        loss_fn = compiled_loss_fn(self)
        if self._regularizer is not None:
            y, loss_fn = self._regularizer.attack_target(self, x, y, loss_fn)
        return pgd.pgd(self, loss_fn, x, y, ops.cast(self.current_epsilon, x.dtype),
                       seed=self._step_seed(), attack_norm=self.attack_norm,
                       clip_min=self.clip_min, clip_max=self.clip_max, **self._pgd_settings())

    def _objective(self, x, y, sample_weight, training: bool, weight: Optional[float],
                   carry: Any = None):
        """(y_pred, this replica's share of the objective, regularizer, its weight)."""
        per_example.require_targets(y)
        x = per_example.as_float(x)
        state = backend.current().snapshot(self)  # what the regulariser's passes run with
        x_adv = self.adversarial_examples(x, y)
        trained = x if self._regularizer is not None and self._regularizer.trains_on_clean else x_adv
        y_pred = self(trained, training=training)
        loss = self.compute_loss(x=trained, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                 training=training)
        zero = ops.zeros((), loss.dtype)
        if weight is None:
            return y_pred, loss, zero, zero
        context = regularizers.Context(
            model=self, x=x, x_adv=x_adv, y=y, y_pred=y_pred, loss_fn=compiled_loss_fn(self),
            training=training, seed=self._step_seed(1),
            epsilon=ops.cast(self.current_epsilon, x.dtype))  # read here: the scope maps the state only
        with keras.StatelessScope(state_mapping=state):  # the regulariser leaves no trace
            values = self._regularizer.values(context)
        if sample_weight is not None:
            values = values * ops.reshape(ops.cast(sample_weight, values.dtype), (-1,))
        value = ops.mean(values)
        weight = ops.cast(self._regularizer.weight(self, value, weight), value.dtype)
        replicas = backend.current().num_replicas()
        loss = loss + ops.cast(self._regularizer.scale * weight * value / replicas, loss.dtype)
        return y_pred, loss, ops.cast(value, loss.dtype), ops.cast(weight, loss.dtype) + zero


@keras.saving.register_keras_serializable(package="keras_gradreg",
                                          name="SingleStepAdversarialModel")
class _SavedSingleStepModel:
    """How `.keras` files of 0.4 to 0.7 name a single-step model (the class
    SingleStepAdversarialModel, removed in 0.8): they load as AdversarialTrainingModel,
    attack "fgsm_rs" unless the file names another."""

    def get_config(self) -> dict:
        """Never called: no instance exists (Keras registers classes with one)."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> AdversarialTrainingModel:
        """The AdversarialTrainingModel a saved config describes."""
        config = dict(deprecation.upgrade_config("SingleStepAdversarialModel", config))
        config.setdefault("attack", "fgsm_rs")
        return AdversarialTrainingModel.from_config(config, custom_objects=custom_objects)
