"""This library's finite-difference input-gradient penalty as a regulariser of
single-step adversarial training (Finlay & Oberman 2019): lambda/2 times the squared dual
norm of the input gradient at the clean point, estimated with the model's `h`."""

from typing import Any

from keras_gradreg import backend
from keras_gradreg import penalty as penalty_lib
from keras_gradreg.regularizers.base import Context
from keras_gradreg.regularizers.base import Regularizer


class GradientPenalty(Regularizer):
    """The penalty of GradRegModel (forward difference, step `model.h`, against
    `model.attack_norm`), weighted lambda / 2 as in the paper."""

    scale = 0.5

    def values(self, context: Context) -> Any:
        model = context.model
        clean = backend.clean_pass(model, context.x, context.y, context.loss_fn,
                                       context.training)
        return penalty_lib.penalty_from_clean_pass(
            model, clean, context.y, context.loss_fn, h=model.h, attack_norm=model.attack_norm,
            difference="forward", estimator="finite_difference", training=context.training)
