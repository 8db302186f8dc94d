"""keras_gradreg: train and verify robust image classifiers with Keras 3.

The finite-difference input-gradient penalty of Finlay & Oberman (2019), adversarial
training (PGD, FGSM-RS, N-FGSM, free, TRADES) and its regularisers, AutoAttack and the
paper's minimum-distance protocol in TensorFlow, and the paper's bounds as Keras metrics.

Runs on the TensorFlow and JAX backends of Keras (KERAS_BACKEND); importing it under
another backend raises ImportError naming them. What a saved model may name (the models,
the smooth ReLU, the grouped Conv2D, the optimizers and, on TensorFlow, the bound
metrics) is imported with the package; every other public name below is imported when
first used.
"""

import keras

from keras_gradreg import backend

backend.check_supported()
backend.current()  # the backend's module, before any traced function asks for it

# pylint: disable=g-import-not-at-top,wrong-import-position
from keras_gradreg import activations  # registers smooth_relu, which saved models name
from keras_gradreg import deprecation
from keras_gradreg import layers  # registers the Conv2D saved ResNeXts name
from keras_gradreg import lazy
from keras_gradreg import models  # registers the classes saved models name
from keras_gradreg import optimizers  # registers the optimizer and schedule saved models name
from keras_gradreg import metrics  # registers the bound metrics saved models compile with
from keras_gradreg import penalty

__version__ = "0.9.1"

SUPPORTED_BACKENDS = backend.SUPPORTED_BACKENDS
"""The Keras backends keras_gradreg runs on: ("tensorflow", "jax", "torch")."""

_EXPORTS = {
    # models: what trains
    "AdversarialTrainingModel": "models",
    "EpsilonRamp": "models",
    "FreeAdversarialTrainingModel": "models",
    "GradRegModel": "models",
    "NonFiniteGuard": "models",
    "RobustnessMonitor": "models",
    # penalty: the mathematics, for your own loops
    "ATTACK_NORMS": "per_example",
    "DEFAULT_H": "penalty",
    "DIFFERENCES": "penalty",
    "DUAL_NORMS": "per_example",
    "ESTIMATORS": "penalty",
    "PENALTY_FACTORS": "penalty",
    "PENALTY_POWERS": "penalty",
    "direction": "penalty",
    "dual_norm": "per_example",
    "input_gradient_penalty": "penalty",
    "stateless_input_gradient_penalty": "penalty",
    # regularizers
    "local_linearity_error": "regularizers",
    "sample_local_linearity_triplet": "regularizers",
    # metrics: the paper's lower bounds (TensorFlow)
    "BoundTerms": "metrics",
    "CurvatureBound": "metrics",
    "LipschitzBound": "metrics",
    "bound_terms": "metrics",
    "curvature_bound": "metrics",
    "lipschitz_bound": "metrics",
    "top_hessian_eigenvalue": "metrics",
    # attacks
    "ATTACKS": "attacks",
    "AttackBudget": "attacks",
    "AutoAttackBudget": "attacks",
    "CarliniWagnerL2": "attacks.cleverhans",
    "SPSAAdam": "attacks.cleverhans",
    "dlr_loss": "attacks",
    "misclassification_margin": "attacks",
    # evaluation: the paper's protocol and AutoAttack's
    "AutoAttackReport": "evaluation",
    "RobustnessReport": "evaluation",
    "SanityCheck": "evaluation",
    "evaluate_autoattack": "evaluation",
    "evaluate_robustness": "evaluation",
    "format_table": "evaluation",
    "write_results": "evaluation",
    # data and the model zoo
    "load_dataset": "data",
    "load_offline_mnist": "datasets",
    "smooth_relu": "activations",
}
_SUBMODULES = ("activations", "architectures", "attacks", "backend", "data", "datasets",
               "deprecation",
               "evaluation", "files", "frontier", "layers", "metrics", "models", "penalty", "per_example", "plotting",
               "regularizers", "training", "validation")

__all__ = (
    "activations",
    "AdversarialTrainingModel",
    "architectures",
    "ATTACK_NORMS",
    "attacks",
    "ATTACKS",
    "AttackBudget",
    "AutoAttackBudget",
    "AutoAttackReport",
    "backend",
    "bound_terms",
    "BoundTerms",
    "CarliniWagnerL2",
    "curvature_bound",
    "CurvatureBound",
    "data",
    "datasets",
    "DEFAULT_H",
    "deprecation",
    "DIFFERENCES",
    "direction",
    "dlr_loss",
    "dual_norm",
    "DUAL_NORMS",
    "EpsilonRamp",
    "ESTIMATORS",
    "evaluate_autoattack",
    "evaluate_robustness",
    "evaluation",
    "files",
    "format_table",
    "FreeAdversarialTrainingModel",
    "frontier",
    "GradRegModel",
    "input_gradient_penalty",
    "layers",
    "lipschitz_bound",
    "LipschitzBound",
    "load_dataset",
    "load_offline_mnist",
    "local_linearity_error",
    "metrics",
    "misclassification_margin",
    "models",
    "NonFiniteGuard",
    "optimizers",
    "penalty",
    "per_example",
    "PENALTY_FACTORS",
    "PENALTY_POWERS",
    "plotting",
    "regularizers",
    "RobustnessMonitor",
    "RobustnessReport",
    "sample_local_linearity_triplet",
    "SanityCheck",
    "smooth_relu",
    "SPSAAdam",
    "stateless_input_gradient_penalty",
    "SUPPORTED_BACKENDS",
    "top_hessian_eigenvalue",
    "training",
    "validation",
    "write_results",
)

__getattr__, __dir__ = lazy.loader(
    __name__, _EXPORTS, _SUBMODULES,
    renamed=lambda name: deprecation.renamed_attribute("keras_gradreg", name),
    public=("optimizers", "SUPPORTED_BACKENDS"))
