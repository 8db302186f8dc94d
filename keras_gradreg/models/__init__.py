"""What trains: keras.Model subclasses whose training steps add a penalty or adversarial
examples, all on the SteppedModel contract (every Keras backend), and their callbacks."""

from keras_gradreg import deprecation
from keras_gradreg.models.adversarial import AdversarialTrainingModel
from keras_gradreg.models.adversarial import Threat
from keras_gradreg.models.callbacks import COLLAPSE
from keras_gradreg.models.callbacks import MONITOR_STEPS
from keras_gradreg.models.callbacks import EpsilonRamp
from keras_gradreg.models.callbacks import RobustnessMonitor
from keras_gradreg.models.free import REPLAYS
from keras_gradreg.models.free import FreeAdversarialTrainingModel
from keras_gradreg.models.gradreg import GradRegModel
from keras_gradreg.models.gradreg import check_clean_weight
from keras_gradreg.models.gradreg import check_penalty_every
from keras_gradreg.models.gradreg import check_penalty_warmup
from keras_gradreg.models.gradreg import check_penalty_weight
from keras_gradreg.models.stepped import NonFiniteGuard
from keras_gradreg.models.stepped import SteppedModel
from keras_gradreg.models.stepped import WrapsModel
from keras_gradreg.models.stepped import compiled_loss_fn

__all__ = (
    "AdversarialTrainingModel",
    "COLLAPSE",
    "compiled_loss_fn",
    "EpsilonRamp",
    "FreeAdversarialTrainingModel",
    "GradRegModel",
    "MONITOR_STEPS",
    "NonFiniteGuard",
    "REPLAYS",
    "RobustnessMonitor",
    "SteppedModel",
    "Threat",
    "check_clean_weight",
    "check_penalty_every",
    "check_penalty_warmup",
    "check_penalty_weight",
    "WrapsModel",
)

__getattr__ = deprecation.module_getattr("keras_gradreg.models")
"""Names this package had before 0.8 (deprecation.RENAMED), with a DeprecationWarning."""
