"""The local-linearity error against an independent float64 computation, and its sampler."""

import keras
from keras import ops
import numpy as np
import pytest

from helpers import batch
from helpers import linear_classifier
from helpers import softmax
import keras_gradreg as kg

pytestmark = pytest.mark.every_backend
CE64 = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")


def _numpy_ce(model, x, y):
    w, b = model.get_weights()
    return -np.log(softmax(x @ w + b)[np.arange(len(y)), y])


def test_the_error_equals_a_float64_numpy_computation_on_fixed_triplets():
    model = linear_classifier(dtype="float64")
    x_a, y = batch(n=8, dtype="float64")
    x_b, _ = batch(n=8, seed=2, dtype="float64")
    alpha = np.linspace(0.05, 0.95, 8)
    got = ops.convert_to_numpy(kg.local_linearity_error(model, x_a, x_b, alpha, y, CE64))
    x_c = (1 - alpha)[:, None] * x_a + alpha[:, None] * x_b
    want = (_numpy_ce(model, x_c, y) - (1 - alpha) * _numpy_ce(model, x_a, y)
            - alpha * _numpy_ce(model, x_b, y)) ** 2
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert want.min() > 0  # the cross-entropy of a linear model is not linear in x


def test_the_error_is_zero_where_the_loss_is_affine_in_the_input():
    model = linear_classifier(dtype="float64")
    x_a, y = batch(n=8, dtype="float64")
    x_b, _ = batch(n=8, seed=2, dtype="float64")
    logit = lambda y_true, y_pred: y_pred[:, 0] - 2.0 * y_pred[:, 1]  # noqa: E731, affine in x
    got = ops.convert_to_numpy(kg.local_linearity_error(model, x_a, x_b, np.full(8, 0.3), y, logit))
    np.testing.assert_allclose(got, 0.0, atol=1e-24)


@pytest.mark.parametrize("attack_norm,epsilon", [("linf", 0.1), ("l2", 0.5)])
def test_the_sampler_draws_in_the_ball_within_the_range_from_the_seed(attack_norm, epsilon):
    x, _ = batch(n=256, shape=(4, 4), dtype="float64")
    seed = np.array([5, 9], np.int32)
    x_a, x_b, alpha = (ops.convert_to_numpy(t) for t in kg.sample_local_linearity_triplet(
        x, epsilon, seed, attack_norm))
    for t in (x_a, x_b):
        distance = ops.convert_to_numpy(kg.attacks.ball.norm(t - x, attack_norm))
        assert distance.max() <= epsilon + 1e-12 and t.min() >= 0 and t.max() <= 1
    assert not np.allclose(x_a, x_b)
    assert 0 <= alpha.min() and alpha.max() <= 1 and alpha.shape == (256,)
    assert abs(alpha.mean() - 0.5) < 0.05
    again = kg.sample_local_linearity_triplet(x, epsilon, seed, attack_norm)
    np.testing.assert_array_equal(ops.convert_to_numpy(again[0]), x_a)
    other = kg.sample_local_linearity_triplet(x, epsilon, seed + 1, attack_norm)
    assert not np.allclose(ops.convert_to_numpy(other[0]), x_a)


def test_adaptive_weight_switches_on_at_a_spike_and_decays():
    """ELLE-A: 0 until an error exceeds mean + 2 std of the errors before it (from the
    third step), then the full weight, times 0.99 per step; a NaN error changes nothing."""
    model = kg.AdversarialTrainingModel.from_model(
        linear_classifier(), epsilon=0.1, attack="fgsm_rs",
        regularizer="adaptive_local_linearity", regularizer_weight=50.0)
    unit = kg.regularizers.AdaptiveLocalLinearity()
    errors = [1.0, 1.2, 0.8, 1.1, 5.0, 1.0, 0.9, float("nan"), 6.0, 1.0]
    got = [float(ops.convert_to_numpy(unit.weight(model, ops.convert_to_tensor(e, "float32"),
                                                  50.0)))
           for e in errors]
    want, weight, past = [], 0.0, []
    for e in errors:
        if np.isnan(e):
            want.append(0.0)
            continue
        weight = 50.0 if len(past) >= 2 and e > np.mean(past) + 2 * np.std(past) else 0.99 * weight
        past.append(e)
        want.append(weight)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert want[4] == 50.0 and want[5] == pytest.approx(49.5) and want[8] == 50.0
