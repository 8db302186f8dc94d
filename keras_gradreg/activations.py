"""The paper's smooth ReLU, a C^1 activation for which the curvature bound is finite."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_gradreg", name="smooth_relu")
def smooth_relu(x):
    """Finlay & Oberman's "c2relu": max(x, 0) for |x| >= 1/2, -(x+1/2)^4/2 + (x+1/2)^3 inside.

    It equals ReLU outside [-1/2, 1/2], is continuously differentiable everywhere and
    has a bounded second derivative, so input Hessians (and the curvature bound) exist.
    Usable by name once keras_gradreg is imported: `Dense(10, activation="smooth_relu")`.
    """
    x = ops.convert_to_tensor(x)
    shifted = ops.clip(x + 0.5, 0.0, 1.0)  # the polynomial's argument, kept in its range
    inside = -0.5 * shifted**4 + shifted**3
    return ops.where(ops.abs(x) < 0.5, inside, ops.relu(x))


# `keras.activations.get("smooth_relu")`, which layers use for activation="smooth_relu",
# looks names up only in Keras' own table; the decorator above covers saved models.
_KERAS_ACTIVATIONS = keras.src.activations.ALL_OBJECTS_DICT
_KERAS_ACTIVATIONS.setdefault("smooth_relu", smooth_relu)
