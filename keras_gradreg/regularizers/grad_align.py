"""GradAlign (Andriushchenko & Flammarion, NeurIPS 2020): 1 - cos(grad_x loss(x),
grad_x loss(x + eta)), eta uniform in the ball; the second gradient is differentiated
through (double backpropagation: the cost the finite-difference and ELLE regularisers
avoid)."""

from typing import Any

from keras import ops

from keras_gradreg import backend
from keras_gradreg import per_example
from keras_gradreg.attacks import ball
from keras_gradreg.regularizers.base import Context
from keras_gradreg.regularizers.base import Regularizer


class GradAlign(Regularizer):
    """1 - cos of the input gradients at the clean point (a constant) and at a random
    point of the ball."""

    def values(self, context: Context) -> Any:
        model, x = context.model, context.x
        first = ops.stop_gradient(backend.clean_pass(
            model, x, context.y, context.loss_fn, context.training).gradient)
        noisy = ball.clip_to_range(
            x + ball.uniform_in_ball(ops.shape(x), context.epsilon, model.attack_norm,
                                     context.seed, x.dtype),
            model.clip_min, model.clip_max)
        second = backend.clean_pass(model, noisy, context.y, context.loss_fn,
                                    context.training, differentiable=True).gradient
        lengths = per_example.norm(first, "l2") * per_example.norm(second, "l2")
        return 1.0 - ops.divide_no_nan(ops.sum(first * second, axis=1), lengths)
