"""The paper's smooth ReLU, a C^1 activation for which the curvature bound is finite."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_gradreg", name="smooth_relu")
def smooth_relu(x):
    """Finlay & Oberman's "c2relu": max(x, 0) for |x| >= 1/2, -(x+1/2)^4/2 + (x+1/2)^3 inside.

    It equals ReLU outside [-1/2, 1/2], is continuously differentiable everywhere and
    has a bounded second derivative, so input Hessians (and the curvature bound) exist.
    Pass the function itself, `Dense(10, activation=kg.smooth_relu)`; it is registered
    with Keras' public serialization API, so saved models load without custom_objects.
    (Keras 3 looks activation *names* up in its own table only, which has no public
    way in.)
    """
    x = ops.convert_to_tensor(x)
    shifted = ops.clip(x + 0.5, 0.0, 1.0)  # the polynomial's argument, kept in its range
    inside = -0.5 * shifted**4 + shifted**3
    return ops.where(ops.abs(x) < 0.5, inside, ops.relu(x))
