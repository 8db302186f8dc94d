"""The callbacks of adversarial training: the radius ramp and the held-out monitor of
catastrophic overfitting."""

import math
import warnings

import keras
import numpy as np
from keras import ops

from keras_gradreg import per_example
from keras_gradreg import validation
from keras_gradreg.attacks import ball
from keras_gradreg.attacks import pgd
from keras_gradreg.models.stepped import compiled_loss_fn

MONITOR_STEPS = 10
"""PGD steps of RobustnessMonitor's held-out check (a step of MADRY_REACH / steps)."""
COLLAPSE = 0.5
"""Catastrophic overfitting: held-out PGD accuracy below this share of its best so far
while FGSM accuracy is at least what it was then."""


class EpsilonRamp(keras.callbacks.Callback):
    """Raises an adversarially trained model's radius linearly to full strength.

    At the start of epoch e (from 0) the radius is epsilon * min(1, (e + 1) / epochs);
    epochs = 0 is no ramp (full strength from the first step).
    """

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = validation.check_number("ramp epochs", epochs, low_open=False, integer=True,
                                              hint="(0: no ramp)")

    def on_epoch_begin(self, epoch, logs=None):
        share = min(1.0, (epoch + 1) / self.epochs) if self.epochs else 1.0
        self.model.current_epsilon.assign(self.model.epsilon * share)


class RobustnessMonitor(keras.callbacks.Callback):
    """Watches held-out robustness during training, and catastrophic overfitting.

    At each epoch's end it adds to the logs (History, CSV, TensorBoard; put it before
    the loggers) the accuracy of the model on held-out images under FGSM from a random
    start (`fgsm_accuracy`) and under MONITOR_STEPS-step PGD (`pgd_accuracy`), both at
    `epsilon`, ascending the compiled loss,
    and `catastrophic_overfitting`: 1 from the epoch where PGD accuracy fell below
    COLLAPSE x its best while FGSM accuracy held (Wong et al. 2020, Sec. 5: a failure of
    fast adversarial training), with a warning naming the epoch.

    Args:
      x: held-out images (a batch or two is enough).
      y: their integer labels.
      epsilon: the radius.
      clip_min: the data range's lowest value.
      clip_max: the data range's highest value.
      attack_norm: "linf" or "l2", the ball's norm.
    """

    def __init__(self, x, y, epsilon: float, clip_min: float = 0.0, clip_max: float = 1.0,
                 attack_norm: str = per_example.DEFAULT_ATTACK_NORM):
        super().__init__()
        x = np.asarray(x, np.float32)
        ball.check_norm(attack_norm)
        self.epsilon = ball.check_epsilon(epsilon, attack_norm, clip_min, clip_max,
                                          math.prod(x.shape[1:]))
        self.clip_min, self.clip_max, self.attack_norm = clip_min, clip_max, attack_norm
        self.x, self.y = x, np.reshape(y, -1)
        self.best = (0.0, 0.0)  # (PGD accuracy, FGSM accuracy then)
        self.collapsed_at = None

    def _accuracy(self, steps: int, step_size: float) -> float:
        model = self.model
        x_adv = pgd.pgd(model, compiled_loss_fn(model), self.x, self.y, self.epsilon,
                        steps=steps, step_size=step_size, seed=np.zeros(2, np.int32),
                        attack_norm=self.attack_norm, clip_min=self.clip_min,
                        clip_max=self.clip_max)
        predicted = np.argmax(model.predict(ops.convert_to_numpy(x_adv), verbose=0), axis=1)
        return float(np.mean(predicted == self.y))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        pgd_accuracy = self._accuracy(MONITOR_STEPS,
                                      pgd.step_for_reach(MONITOR_STEPS, pgd.MADRY_REACH))
        fgsm = self._accuracy(1, pgd.FGSM_STEP)
        if pgd_accuracy > self.best[0]:
            self.best = (pgd_accuracy, fgsm)
        if (self.collapsed_at is None and pgd_accuracy < COLLAPSE * self.best[0]
                and fgsm >= self.best[1]):
            self.collapsed_at = epoch
            warnings.warn(f"Catastrophic overfitting at epoch {epoch}: held-out PGD accuracy "
                          f"{pgd_accuracy:.3f} (best {self.best[0]:.3f}) while FGSM accuracy is "
                          f"{fgsm:.3f} at epsilon {self.epsilon:g}.", stacklevel=2)
        logs.update(pgd_accuracy=pgd_accuracy, fgsm_accuracy=fgsm,
                    catastrophic_overfitting=float(self.collapsed_at is not None))
