"""What a regulariser of adversarial training is: a per-example value that
AdversarialTrainingModel adds to its objective, weighted, and what it needs to compute it."""

from typing import Any, Callable, NamedTuple


class Context(NamedTuple):
    """What a regulariser sees of one training step.

    Its passes run with the model's state as before the step (BatchNorm statistics,
    dropout seeds) and leave no trace (a `keras.StatelessScope`).
    """

    model: Any  # the model being trained; its attack_norm, h, clip_min and clip_max
    x: Any  # the clean batch, float
    x_adv: Any  # the adversarial examples of the step
    y: Any  # the targets
    y_pred: Any  # the model's outputs on the batch the compiled loss was taken on
    loss_fn: Callable  # the compiled loss, per example
    training: bool
    seed: Any  # a stateless seed, (2,): the regulariser's own stream of the step
    epsilon: Any  # the radius now (EpsilonRamp raises it), in x's dtype


class Regularizer:
    """One regulariser: `values` per example, added to the objective as
    `weight * scale * mean(values)`.

    Attributes:
      scale: the factor of the weight (1; the finite-difference penalty's is 1/2: lambda/2).
      trains_on_clean: the compiled loss is taken on the clean batch, not on the
        adversarial examples (TRADES).
    """

    scale = 1.0
    trains_on_clean = False

    def build(self, model: Any) -> None:
        """Creates the regulariser's state on the model, where it is saved and resumed."""

    def attack_target(self, model: Any, x: Any, y: Any, loss_fn: Callable) -> tuple:
        """(targets, loss) the adversarial examples ascend: the labels and the compiled
        loss, unless the regulariser says otherwise (TRADES: its divergence)."""
        del model, x
        return y, loss_fn

    def values(self, context: Context) -> Any:
        """The regulariser of each example, (batch,)."""
        raise NotImplementedError

    def weight(self, model: Any, value: Any, weight: float) -> Any:
        """The weight the batch mean `value` is added with (ELLE-A's changes)."""
        del model, value
        return weight
