"""Under MirroredStrategy on two logical CPUs, training matches one device exactly.

The models are float64 so that the comparison tests the scaling of the penalty across
replicas, not float32 rounding (a finite difference divides rounding errors by h).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gradreg as kg
from helpers import batch, small_cnn

CE64 = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")


def _train(strategy, x, y, weights, **gradreg_kwargs):
    with strategy.scope():
        model = kg.GradRegModel.from_model(small_cnn("softplus", dtype="float64"), penalty_weight=1.0, **gradreg_kwargs)
        model.set_weights(weights)
        model.compile(keras.optimizers.SGD(0.5, momentum=0.9), CE64)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    history = model.fit(data, epochs=3, verbose=0)
    return model.get_weights(), history.history, model.evaluate(data, return_dict=True, verbose=0)


@pytest.mark.parametrize("attack_norm,difference,every", [("l2", "forward", 1), ("linf", "central", 1),
                                                          ("l2", "forward", 3)])
def test_two_replicas_give_the_same_weights_as_one_device(attack_norm, difference, every):
    x, y = batch(n=32, shape=(6, 6, 2), dtype="float64")
    weights = small_cnn("softplus", dtype="float64").get_weights()
    mirrored = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
    assert mirrored.num_replicas_in_sync == 2
    options = dict(attack_norm=attack_norm, difference=difference, penalty_every=every)
    one = _train(tf.distribute.OneDeviceStrategy("CPU:0"), x, y, weights, **options)
    two = _train(mirrored, x, y, weights, **options)
    for a, b in zip(one[0], two[0]):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)
    for key in ("loss", "penalty", "grad_norm"):
        np.testing.assert_allclose(two[1][key], one[1][key], rtol=1e-6)
        np.testing.assert_allclose(two[2][key], one[2][key], rtol=1e-6)
    assert not np.allclose(one[0][0], weights[0])  # training moved the weights


def _evaluate_bounds(strategy, x, y, weights):
    with strategy.scope():
        model = kg.GradRegModel.from_model(small_cnn("softplus"), penalty_weight=1.0, attack_norm="l2")
        model.set_weights(weights)
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=[kg.LipschitzBound("linf"), kg.LipschitzBound("l2", epsilon=0.05),
                               kg.CurvatureBound(curvature_iterations=5)])
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    return model.evaluate(data, return_dict=True, verbose=0)


def test_bound_metrics_give_the_same_value_on_two_replicas():
    x, y = batch(n=40, shape=(6, 6, 2))
    weights = small_cnn("softplus").get_weights()
    one = _evaluate_bounds(tf.distribute.OneDeviceStrategy("CPU:0"), x, y, weights)
    two = _evaluate_bounds(tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"]), x, y, weights)
    for key in ("lipschitz_bound_linf", "lipschitz_bound_l2_ge_0.05", "curvature_bound_l2"):
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5, err_msg=key)
    assert one["lipschitz_bound_linf"] > 0


def test_a_step_nonfinite_on_one_replica_updates_nothing_on_any():
    """The NaN sits in replica 1's half of the second batch: both replicas skip the step."""
    x, y = batch(n=16, shape=(6, 6, 2), dtype="float64")
    x[13, 0, 0, 0] = np.nan
    weights = small_cnn("softplus", dtype="float64").get_weights()
    models = []
    for strategy, data in [(tf.distribute.OneDeviceStrategy("CPU:0"), (x[:8], y[:8])),
                           (tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"]), (x, y))]:
        with strategy.scope():
            model = kg.GradRegModel.from_model(small_cnn("softplus", dtype="float64"), penalty_weight=1.0, attack_norm="l2")
            model.set_weights(weights)
            model.compile(keras.optimizers.Adam(0.1), CE64)
        models.append(model)
        dataset = tf.data.Dataset.from_tensor_slices(data).batch(8)
        if len(data[0]) == 8:
            model.fit(dataset, verbose=0)
        else:
            with pytest.raises(FloatingPointError, match="training batch 1"):
                model.fit(dataset, verbose=0)
    for a, b in zip(models[0].get_weights(), models[1].get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)
    assert int(models[1].optimizer.iterations.numpy()) == 1
