"""keras_gradreg: scaleable input-gradient regularisation for Keras 3 (Finlay & Oberman, 2019).

Runs on the TensorFlow and JAX backends of Keras (KERAS_BACKEND); importing it under
another backend raises ImportError naming them.
"""

from keras_gradreg import backend

backend.check_supported()

# pylint: disable=g-import-not-at-top,wrong-import-position
from keras_gradreg import adversarial_training
from keras_gradreg import architectures
from keras_gradreg import attacks
from keras_gradreg import autoattack
from keras_gradreg import data
from keras_gradreg import deprecation
from keras_gradreg import evaluation
from keras_gradreg import files
from keras_gradreg import frontier
from keras_gradreg import local_linearity
from keras_gradreg import metrics
from keras_gradreg import penalty
from keras_gradreg import primitives
from keras_gradreg import training
from keras_gradreg import validation
from keras_gradreg.activations import smooth_relu
from keras_gradreg.adversarial_training import AdversarialTrainingModel
from keras_gradreg.adversarial_training import EpsilonRamp
from keras_gradreg.adversarial_training import FreeAdversarialTrainingModel
from keras_gradreg.adversarial_training import RobustnessMonitor
from keras_gradreg.adversarial_training import SingleStepAdversarialModel
from keras_gradreg.attacks import ATTACKS
from keras_gradreg.attacks import AttackSettings
from keras_gradreg.attacks import CarliniWagnerL2
from keras_gradreg.attacks import SPSAAdam
from keras_gradreg.autoattack import AutoAttackBudget
from keras_gradreg.autoattack import dlr_loss
from keras_gradreg.data import load_dataset
from keras_gradreg.data import load_offline_mnist
from keras_gradreg.evaluation import AutoAttackReport
from keras_gradreg.evaluation import RobustnessReport
from keras_gradreg.evaluation import SanityCheck
from keras_gradreg.evaluation import evaluate_autoattack
from keras_gradreg.evaluation import evaluate_robustness
from keras_gradreg.evaluation import format_table
from keras_gradreg.evaluation import write_results
from keras_gradreg.local_linearity import local_linearity_error
from keras_gradreg.local_linearity import sample_local_linearity_triplet
from keras_gradreg.metrics import BOUND_NORMS
from keras_gradreg.metrics import BoundTerms
from keras_gradreg.metrics import CurvatureBound
from keras_gradreg.metrics import LipschitzBound
from keras_gradreg.metrics import bound_terms
from keras_gradreg.metrics import curvature_bound
from keras_gradreg.metrics import lipschitz_bound
from keras_gradreg.metrics import misclassification_margin
from keras_gradreg.metrics import top_hessian_eigenvalue
from keras_gradreg.model import GradRegModel
from keras_gradreg.model import NonFiniteGuard
from keras_gradreg.penalty import ATTACK_NORMS
from keras_gradreg.penalty import DEFAULT_H
from keras_gradreg.penalty import DIFFERENCES
from keras_gradreg.penalty import DUAL_NORMS
from keras_gradreg.penalty import METHODS
from keras_gradreg.penalty import direction
from keras_gradreg.penalty import dual_norm
from keras_gradreg.penalty import input_gradient_penalty
from keras_gradreg.penalty import stateless_input_gradient_penalty

SUPPORTED_BACKENDS = backend.SUPPORTED_BACKENDS

__version__ = "0.6.3"

__all__ = (
    "adversarial_training",
    "AdversarialTrainingModel",
    "architectures",
    "ATTACK_NORMS",
    "attacks",
    "ATTACKS",
    "AttackSettings",
    "autoattack",
    "AutoAttackBudget",
    "AutoAttackReport",
    "BOUND_NORMS",
    "bound_terms",
    "BoundTerms",
    "CarliniWagnerL2",
    "curvature_bound",
    "CurvatureBound",
    "data",
    "DEFAULT_H",
    "deprecation",
    "DIFFERENCES",
    "direction",
    "dlr_loss",
    "dual_norm",
    "DUAL_NORMS",
    "EpsilonRamp",
    "evaluate_autoattack",
    "evaluate_robustness",
    "evaluation",
    "files",
    "format_table",
    "FreeAdversarialTrainingModel",
    "frontier",
    "GradRegModel",
    "input_gradient_penalty",
    "lipschitz_bound",
    "LipschitzBound",
    "load_dataset",
    "load_offline_mnist",
    "local_linearity",
    "local_linearity_error",
    "METHODS",
    "metrics",
    "misclassification_margin",
    "NonFiniteGuard",
    "penalty",
    "primitives",
    "RobustnessMonitor",
    "RobustnessReport",
    "sample_local_linearity_triplet",
    "SanityCheck",
    "SingleStepAdversarialModel",
    "smooth_relu",
    "SPSAAdam",
    "stateless_input_gradient_penalty",
    "SUPPORTED_BACKENDS",
    "top_hessian_eigenvalue",
    "training",
    "validation",
    "write_results",
)


def __getattr__(name: str):
    """Renamed attributes (`kg.models` is `kg.architectures` since 0.5), with a
    DeprecationWarning: see deprecation.RENAMED."""
    new = deprecation.renamed_attribute("keras_gradreg", name)
    if new is None:
        raise AttributeError(f"module 'keras_gradreg' has no attribute {name!r}")
    return globals()[new]
