"""CoupledWeightDecaySGD against PyTorch's SGD written in NumPy, PiecewiseLinear at its
points and between them, and both through Keras' serialization."""

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg.optimizers import CoupledWeightDecaySGD
from keras_gradreg.optimizers import PiecewiseLinear


def _torch_sgd(w, gradients, lr, momentum, l2):
    """torch.optim.SGD(lr, momentum, weight_decay=l2), dampening 0, as its docs write it:
    g += l2 w; b = momentum b + g (b = g at the first step); w -= lr b."""
    buffer = None
    for g in gradients:
        g = g + l2 * w
        buffer = g if buffer is None else momentum * buffer + g
        w = w - lr * buffer
    return w


@pytest.mark.every_backend
def test_biases_and_batchnorm_shifts_can_be_left_undecayed():
    """decay_biases=False: a Dense bias and BatchNorm's beta step as plain SGD, the kernel
    and BatchNorm's gamma as PyTorch's decayed SGD (the authors' ImageNet recipe)."""
    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                              keras.layers.BatchNormalization()])
    start = {v.path: rng.normal(size=v.shape) for v in model.trainable_variables}
    gradients = [{v.path: rng.normal(size=v.shape) for v in model.trainable_variables}
                 for _ in range(3)]
    for v in model.trainable_variables:
        v.assign(start[v.path])
    optimizer = CoupledWeightDecaySGD(0.1, momentum=0.9, l2=0.1, decay_biases=False)
    for step in gradients:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(step[v.path], v.dtype), v)
                                   for v in model.trainable_variables])
    assert sorted(v.name for v in model.trainable_variables) == ["beta", "bias", "gamma", "kernel"]
    for v in model.trainable_variables:
        l2 = 0.0 if v.name in ("bias", "beta") else 0.1
        expected = _torch_sgd(start[v.path], [g[v.path] for g in gradients], 0.1, 0.9, l2)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(v), expected, rtol=1e-5)
    assert CoupledWeightDecaySGD.from_config(optimizer.get_config()).decay_biases is False


@pytest.mark.every_backend
@pytest.mark.parametrize("l2", [0.0, 5e-4, 0.1])
def test_coupled_weight_decay_steps_as_pytorchs_sgd(l2):
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 4))
    gradients = [rng.normal(size=(3, 4)) for _ in range(6)]
    variable = keras.Variable(w0, dtype="float64")
    optimizer = CoupledWeightDecaySGD(0.1, momentum=0.9, l2=l2)
    for g in gradients:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(g, "float64"), variable)])
    expected = _torch_sgd(w0, gradients, 0.1, 0.9, l2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), expected, rtol=1e-6)  # lr float32
    decoupled = keras.Variable(w0, dtype="float64")  # Keras' weight_decay: another decay
    keras_sgd = keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=l2 or None)
    for g in gradients:
        keras_sgd.apply_gradients([(keras.ops.convert_to_tensor(g, "float64"), decoupled)])
    assert (l2 == 0) == np.allclose(keras.ops.convert_to_numpy(decoupled), expected, rtol=1e-6)


def test_piecewise_linear_is_linear_between_its_points_and_jumps_at_a_repeated_one():
    schedule = PiecewiseLinear([0, 10, 20, 20, 30], [1.0, 2.0, 0.5, 4.0, 0.0])
    at = lambda step: float(keras.ops.convert_to_numpy(schedule(step)))  # noqa: E731
    expected = {0: 1.0, 5: 1.5, 10: 2.0, 15: 1.25, 19: 0.65, 20: 4.0, 25: 2.0, 30: 0.0, 99: 0.0}
    for step, value in expected.items():
        assert at(step) == pytest.approx(value), step
    with pytest.raises(ValueError, match="must not decrease"):
        PiecewiseLinear([0, 10, 5], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="same length"):
        PiecewiseLinear([0, 10], [1.0])


def test_both_survive_keras_serialization_and_a_saved_model():
    optimizer = CoupledWeightDecaySGD(PiecewiseLinear([0, 4], [0.1, 0.0]), momentum=0.9, l2=5e-4)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(again) is CoupledWeightDecaySGD and again.l2 == 5e-4
    assert again.learning_rate.__class__ is not None
    assert float(again._get_current_learning_rate()) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="weight_decay=0.1: CoupledWeightDecaySGD's decay is l2"):
        CoupledWeightDecaySGD(0.1, weight_decay=0.1)
    assert "optimizers" in kg.__all__
