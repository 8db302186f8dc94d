"""Attacks, one file each, over the lp ball and the losses they share, in keras.ops on
every Keras backend (CleverHans' on TensorFlow).

- base: what an attack is (`Attack`: its name, what it supports, how it is built);
- ball: projections, steps, random starts, "within epsilon";
- losses: cross-entropy, the margin, DLR, TRADES' divergence;
- pgd: the one PGD, of adversarial training, the monitor and the evaluation;
- apgd, fab, square: AutoAttack's attacks;
- cleverhans: CleverHans' attacks on Keras 3 (imported when first built: TensorFlow);
- judge: the model as the attacks see it, and the verification of their examples;
- budgets: the attacks' budgets; registry: every attack by name, built and compiled once
  per model and input shape.

The modules are imported when first used, so that importing the package imports no attack.
"""

from keras_gradreg import deprecation
from keras_gradreg import lazy

_EXPORTS = {
    "ATTACKS": "registry",
    "SETS": "registry",
    "Attack": "base",
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
_SUBMODULES = ("apgd", "ball", "base", "budgets", "cleverhans", "fab", "judge", "losses", "pgd",
               "registry", "square")

__all__ = tuple(sorted(set(_EXPORTS) | set(_SUBMODULES), key=str.lower))

__getattr__, __dir__ = lazy.loader(
    __name__, _EXPORTS, _SUBMODULES,
    renamed=lambda name: deprecation.renamed_attribute("keras_gradreg.attacks", name))
