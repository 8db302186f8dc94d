"""What trains: keras.Model subclasses whose training steps add a penalty or adversarial
examples, all on the SteppedModel contract (both Keras backends), and their callbacks."""

from keras_gradreg.models.adversarial import AdversarialTrainingModel
from keras_gradreg.models.adversarial import SingleStepAdversarialModel
from keras_gradreg.models.adversarial import Threat
from keras_gradreg.models.callbacks import COLLAPSE
from keras_gradreg.models.callbacks import MONITOR_STEPS
from keras_gradreg.models.callbacks import EpsilonRamp
from keras_gradreg.models.callbacks import RobustnessMonitor
from keras_gradreg.models.free import REPLAYS
from keras_gradreg.models.free import FreeAdversarialTrainingModel
from keras_gradreg.models.gradreg import GradRegModel
from keras_gradreg.models.gradreg import validate_clean_weight
from keras_gradreg.models.gradreg import validate_penalty_every
from keras_gradreg.models.gradreg import validate_penalty_warmup
from keras_gradreg.models.gradreg import validate_penalty_weight
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
    "SingleStepAdversarialModel",
    "SteppedModel",
    "Threat",
    "validate_clean_weight",
    "validate_penalty_every",
    "validate_penalty_warmup",
    "validate_penalty_weight",
    "WrapsModel",
)


def __getattr__(name: str):
    """The zoo's builders were `keras_gradreg.models` until 0.5; that name is now this
    package's: say where they went."""
    from keras_gradreg import architectures

    if name in architectures.MODELS or name == "build_model":
        raise AttributeError(f"keras_gradreg.models.{name} is keras_gradreg.architectures.{name} "
                             "(renamed in 0.5; keras_gradreg.models holds the training models "
                             "since 0.7).")
    raise AttributeError(f"module 'keras_gradreg.models' has no attribute {name!r}")
