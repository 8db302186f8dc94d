"""Attacks, one file each, over the lp ball and the losses they share.

- ball: projections, steps, random starts, norms, "within the radius" (keras.ops);
- losses: cross-entropy, the margin, DLR, TRADES' divergence (keras.ops);
- pgd: the one PGD, of adversarial training, the monitor and the evaluation (keras.ops);
- apgd, fab, square: AutoAttack's attacks (TensorFlow);
- cleverhans: CleverHans' attacks on Keras 3 (imported when first asked for);
- judge: the model as the attacks see it, and the verification of their examples;
- budgets: the attacks' budgets; registry: every attack by name, built and compiled once
  per model and input shape.

The TensorFlow modules are imported when first used, so that the models, which use the
ball, the losses and PGD on either backend, do not import TensorFlow through them.
"""

from keras_gradreg import deprecation
from keras_gradreg import lazy

_EXPORTS = {
    "ATTACKS": "registry",
    "SETS": "registry",
    "AttackSpec": "registry",
    "make_attack": "registry",
    "AttackBudget": "budgets",
    "AutoAttackBudget": "budgets",
    "BUDGETS": "budgets",
    "STANDARD_BUDGET": "budgets",
    "SEARCH_BUDGET": "budgets",
    "Judge": "judge",
    "cross_entropy": "losses",
    "dlr_loss": "losses",
    "kl_divergence": "losses",
    "margin": "losses",
    "misclassification_margin": "losses",
}
_SUBMODULES = ("apgd", "ball", "cleverhans", "fab", "judge", "losses", "pgd", "registry",
               "budgets", "square")

__all__ = tuple(sorted(set(_EXPORTS) | set(_SUBMODULES), key=str.lower))

__getattr__, __dir__ = lazy.loader(
    __name__, _EXPORTS, _SUBMODULES,
    renamed=lambda name: deprecation.renamed_attribute("keras_gradreg.attacks", name))
