"""TRADES (Zhang et al., ICML 2019, "Theoretically principled trade-off between robustness
and accuracy"): the compiled loss on the clean batch plus beta times KL(f(x) || f(x')),
x' found by PGD ascending that divergence from the clean prediction."""

from typing import Any, Callable

from keras import ops

from keras_gradreg import per_example
from keras_gradreg.attacks import losses
from keras_gradreg.regularizers.base import Context
from keras_gradreg.regularizers.base import Regularizer

BETA = 6.0
"""The KL term's weight, beta, of the paper's CIFAR-10 and MNIST models."""
STEPS = 10
"""PGD steps of the paper's CIFAR-10 training (its reference code's perturb_steps)."""
STEP_SIZE = 0.007 / 0.031
"""Each step, a multiple of epsilon: the reference code's step 0.007 at epsilon 0.031."""
START = 0.001 / 0.031
"""The random start, uniform in the ball of this multiple of epsilon. The reference code
adds Gaussian noise of standard deviation 0.001 at epsilon 0.031, only to leave x, where
the divergence and its gradient are 0; a uniform start of the same size does that with
the library's one kind of random start."""


class Trades(Regularizer):
    """beta * KL(softmax(f(x)) || softmax(f(x'))) per example, the compiled loss on the
    clean batch; the examples ascend the divergence from the clean prediction in
    inference mode. The model outputs logits."""

    trains_on_clean = True

    def attack_target(self, model: Any, x: Any, y: Any, loss_fn: Callable) -> tuple:
        del y, loss_fn
        reference = ops.stop_gradient(model(x, training=False))
        return reference, lambda reference, logits: losses.kl_divergence(
            per_example.at_least_float32(reference), per_example.at_least_float32(logits))

    def values(self, context: Context) -> Any:
        adversarial = context.model(context.x_adv, training=context.training)
        return losses.kl_divergence(per_example.at_least_float32(context.y_pred),
                                    per_example.at_least_float32(adversarial))
