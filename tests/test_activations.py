"""The smooth ReLU: the paper's formula, C^1, usable by name and in saved models."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gradreg as kg


def _value_and_slope(points):
    x = tf.constant(points, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = kg.smooth_relu(x)
    return y.numpy(), tape.gradient(y, x).numpy()


def test_smooth_relu_is_relu_outside_and_the_polynomial_inside():
    x = np.linspace(-2, 2, 401)
    value, _ = _value_and_slope(x)
    s = x + 0.5
    expected = np.where(np.abs(x) >= 0.5, np.maximum(x, 0), -(s**4) / 2 + s**3)
    np.testing.assert_allclose(value, expected, atol=1e-12)


@pytest.mark.parametrize("knot", [-0.5, 0.5])
def test_smooth_relu_value_and_slope_are_continuous_at_the_knots(knot):
    tiny = 1e-7
    value, slope = _value_and_slope([knot - tiny, knot + tiny])
    assert abs(value[0] - value[1]) < 1e-6
    assert abs(slope[0] - slope[1]) < 1e-5
    assert slope[1] == pytest.approx(0.0 if knot < 0 else 1.0, abs=1e-5)


def test_smooth_relu_has_a_bounded_second_derivative():
    x = tf.constant(np.linspace(-1, 1, 201), tf.float64)
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = kg.smooth_relu(x)
        slope = inner.gradient(y, x)
    curvature = outer.gradient(slope, x).numpy()
    assert np.all(np.isfinite(curvature)) and np.max(np.abs(curvature)) <= 1.5 + 1e-9


def test_smooth_relu_in_a_saved_model_through_the_public_registration(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(4, activation=kg.smooth_relu)(inputs))
    assert keras.saving.get_registered_object("keras_gradreg>smooth_relu") is kg.smooth_relu
    # nothing written into Keras' private table of built-in activations
    assert "smooth_relu" not in keras.src.activations.ALL_OBJECTS_DICT
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.layers[-1].activation is kg.smooth_relu
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
