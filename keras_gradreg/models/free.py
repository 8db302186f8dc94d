""""Free" adversarial training (Shafahi et al., NeurIPS 2019) on the SteppedModel contract,
on TensorFlow and JAX."""

import math
from typing import Any, Optional

import keras
from keras import ops

from keras_gradreg import per_example
from keras_gradreg import validation
from keras_gradreg.attacks import ball
from keras_gradreg.models.adversarial import Threat
from keras_gradreg.models.stepped import SteppedModel

REPLAYS = 4
"""Replays of each batch (Shafahi et al. used m = 8 on CIFAR-10 for their epoch count; 4
suits the 10-epoch runs on 4,000 digits of the frontier)."""


@keras.saving.register_keras_serializable(package="keras_gradreg")
class FreeAdversarialTrainingModel(Threat, SteppedModel):
    """Each batch is replayed `replays` times; each replay's one backward pass gives the
    weight update and, by its input gradient, the next replay's perturbation: a step of
    epsilon along the ascent direction, kept inside the epsilon-ball.

    One train step is `replays` optimizer updates, so train for epochs / replays epochs.
    The perturbation starts at 0 on each batch (Shafahi et al. carry it over from the
    previous batch, whose images are others). `EpsilonRamp` works as for
    AdversarialTrainingModel; a replay whose objective is not finite updates nothing.

    Args:
      epsilon: the radius at full strength.
      replays: m, the updates per batch.
      attack_norm: "linf" (Shafahi et al.'s sign steps) or "l2".
      clip_min: the data range's lowest value.
      clip_max: the data range's highest value.
      seed: kept for the monitor and the config (free training draws nothing).
    """

    def __init__(self, *args, epsilon: float = 0.3, replays: int = REPLAYS,
                 attack_norm: str = per_example.DEFAULT_ATTACK_NORM, clip_min: float = 0.0,
                 clip_max: float = 1.0, seed: int = 0, **kwargs):
        replays = validation.check_number("replays", replays, low=1, low_open=False, integer=True)
        ball.check_norm(attack_norm)
        super().__init__(*args, **kwargs)
        self._init_threat(epsilon, attack_norm, clip_min, clip_max, seed)
        self.replays = replays

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(replays=self.replays, **self._threat_config())
        return config

    def _step_weight(self) -> tuple:
        return None, 1

    def _replays(self) -> int:
        return self.replays

    def _initial_carry(self, x) -> Any:
        return ops.zeros_like(per_example.as_float(x))

    def _objective(self, x, y, sample_weight, training: bool, weight: Optional[float],
                   carry: Any = None):
        """(y_pred, the compiled loss at the perturbed batch, 0, 0) of one replay."""
        x_adv = ball.clip_to_range(per_example.as_float(x) + carry, self.clip_min, self.clip_max)
        y_pred = self(x_adv, training=training)
        loss = self.compute_loss(x=x_adv, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                 training=training)
        zero = ops.zeros((), loss.dtype)
        return y_pred, loss, zero, zero

    def _next_carry(self, carry: Any, gradient: Any) -> Any:
        """The perturbation after a replay: a step of epsilon along the ascent direction of
        the replay's input gradient, back into the epsilon-ball."""
        epsilon = ops.cast(self.current_epsilon, carry.dtype)
        return ball.project(ball.ascend(carry, gradient, epsilon, 1.0, self.attack_norm),
                            ops.zeros_like(carry), epsilon, self.attack_norm, -math.inf, math.inf)
