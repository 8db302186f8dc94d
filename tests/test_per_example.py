"""The ground floor: norms by name and their duals, per-example norms, labels, losses,
flattening and dtypes, against NumPy."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_gradreg as kg
from keras_gradreg import per_example

RNG = np.random.default_rng(0)


@pytest.mark.every_backend
@pytest.mark.parametrize("which", per_example.ATTACK_NORMS)
def test_norms_are_per_example_and_numpys(which):
    t = RNG.normal(size=(3, 4, 5))
    expected = np.linalg.norm(t.reshape(3, -1), ord=per_example.NORM_ORDERS[which], axis=1)
    np.testing.assert_allclose(ops.convert_to_numpy(per_example.norm(t, which)), expected,
                               rtol=1e-12)


@pytest.mark.parametrize("attack_norm", per_example.ATTACK_NORMS)
def test_the_dual_norm_is_hoelders(attack_norm):
    """max over the unit ball of the attack norm of g . d is ||g||_*: check at the
    maximiser and at random unit vectors."""
    g = RNG.normal(size=(2, 6))
    dual = ops.convert_to_numpy(per_example.dual_norm(g, attack_norm))
    order = per_example.NORM_ORDERS[attack_norm]
    for _ in range(50):
        d = RNG.normal(size=(2, 6))
        d /= np.linalg.norm(d, ord=order, axis=1, keepdims=True)
        assert np.all((g * d).sum(1) <= dual + 1e-12)
    best = ops.convert_to_numpy(kg.attacks.ball.ascent_direction(g, attack_norm))
    np.testing.assert_allclose((g * best).sum(1), dual, rtol=1e-12)


@pytest.mark.parametrize("y,expected", [
    (np.array([2, 0, 1]), [2, 0, 1]),
    (np.array([[2], [0], [1]]), [2, 0, 1]),
    (np.eye(3)[[2, 0, 1]], [2, 0, 1]),
    (np.array([2.0, 0.0, 1.0]), [2, 0, 1]),
])
def test_labels_of_every_layout_become_integers(y, expected):
    np.testing.assert_array_equal(np.asarray(per_example.integer_labels(y, 3)), expected)


@pytest.mark.parametrize("y", [np.array(["a", "b"]), ["a", "b"], np.array([b"a", b"b"])])
def test_labels_that_are_not_numbers_are_named(y):
    with pytest.raises(ValueError, match="are not class indices"):
        per_example.integer_labels(y, 2)


def test_flatten_and_unflatten_are_inverses_over_several_inputs():
    a, b = RNG.normal(size=(2, 3, 2)), RNG.normal(size=(2, 4))
    flat = per_example.flatten([a, b])
    assert tuple(flat.shape) == (2, 10)
    back = per_example.unflatten(flat, [ops.convert_to_tensor(a), ops.convert_to_tensor(b)])
    for original, got in zip((a, b), back):
        np.testing.assert_array_equal(ops.convert_to_numpy(got), original)


def test_broadcast_shapes_per_example_values_like_a_batch():
    assert tuple(per_example.broadcast(np.arange(3.0), np.zeros((3, 4, 5))).shape) == (3, 1, 1)


def test_the_loss_is_per_example_weighted_over_outputs_and_refuses_scalars():
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    logits = [RNG.normal(size=(4, 3)).astype("float32") for _ in range(2)]
    y = [np.array([0, 1, 2, 0]), np.array([1, 1, 0, 2])]
    fn = per_example.loss_fn(ce, loss_weights=[1.0, 0.5])
    single = [ops.convert_to_numpy(per_example.loss_fn(ce)(t, z)) for t, z in zip(y, logits)]
    np.testing.assert_allclose(ops.convert_to_numpy(fn(y, logits)), single[0] + 0.5 * single[1],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="returned a scalar"):
        per_example.loss_fn(lambda t, p: ops.mean(p))(y[0], logits[0])
    with pytest.raises(ValueError, match="needs targets"):
        per_example.loss_fn(ce)(None, logits[0])


def test_inputs_become_floats_and_losses_float32_at_least():
    assert keras.backend.standardize_dtype(per_example.as_float(np.zeros(2, "uint8")).dtype) \
        == keras.backend.floatx()
    assert keras.backend.standardize_dtype(
        per_example.at_least_float32(np.zeros(2, "float16")).dtype) == "float32"
    assert keras.backend.standardize_dtype(
        per_example.at_least_float32(np.zeros(2, "float64")).dtype) == "float64"
    with pytest.raises(TypeError, match="dtype string cannot be perturbed"):
        per_example.as_float(np.array(["a"]))
