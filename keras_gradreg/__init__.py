"""keras_gradreg: scaleable input-gradient regularisation for Keras 3 (Finlay & Oberman, 2019)."""

from keras_gradreg.data import load_offline_mnist
from keras_gradreg.model import GradRegModel
from keras_gradreg.penalty import DEFAULT_H
from keras_gradreg.penalty import DIFFERENCES
from keras_gradreg.penalty import METHODS
from keras_gradreg.penalty import NORMS
from keras_gradreg.penalty import direction
from keras_gradreg.penalty import dual_norm
from keras_gradreg.penalty import input_gradient_penalty

__version__ = "0.1.0"

__all__ = (
    "DEFAULT_H",
    "DIFFERENCES",
    "GradRegModel",
    "METHODS",
    "NORMS",
    "direction",
    "dual_norm",
    "input_gradient_penalty",
    "load_offline_mnist",
)
