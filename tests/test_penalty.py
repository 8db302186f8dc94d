"""The penalty function: closed forms, error orders, double backprop, edge cases."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gradreg as kg
from helpers import batch, linear_classifier, linear_input_gradient, numpy_direction, small_cnn
from helpers import numpy_dual_norm

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _penalty(model, x, y, **kwargs):
    loss, penalty = kg.input_gradient_penalty(model, x, y, CE, training=False, **kwargs)
    return loss.numpy(), penalty.numpy()


@pytest.mark.parametrize("attack_norm", kg.ATTACK_NORMS)
def test_direction_is_unit_and_gives_the_dual_norm(attack_norm):
    g = np.random.default_rng(0).normal(size=(4, 10))
    d = kg.direction(tf.constant(g), attack_norm).numpy()
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, rtol=1e-12)
    expected = {"l2": np.linalg.norm(g, axis=1), "l1": np.abs(g).sum(1) / np.sqrt(10),
                "linf": np.abs(g).max(1)}[kg.DUAL_NORMS[attack_norm]]
    np.testing.assert_allclose((g * d).sum(1), expected, rtol=1e-12)
    np.testing.assert_allclose(d, numpy_direction(g, attack_norm), rtol=1e-12)


@pytest.mark.parametrize("attack_norm", kg.ATTACK_NORMS)
def test_unsquared_direction_is_a_unit_step_in_the_attack_norm(attack_norm):
    """penalty_power 1: ||d||_attack = 1 and g . d = ||g||_* (against l_inf: sign(g))."""
    g = np.random.default_rng(0).normal(size=(4, 10))
    d = kg.direction(tf.constant(g), attack_norm, penalty_power=1).numpy()
    order = {"linf": np.inf, "l2": 2, "l1": 1}[attack_norm]
    np.testing.assert_allclose(np.linalg.norm(d, ord=order, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose((g * d).sum(1), numpy_dual_norm(g, attack_norm), rtol=1e-12)
    np.testing.assert_allclose(d, numpy_direction(g, attack_norm, penalty_power=1), rtol=1e-12)


@pytest.mark.parametrize("attack_norm", kg.ATTACK_NORMS)
def test_zero_gradient_gives_zero_direction_and_no_nan(attack_norm):
    g = tf.constant([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]])
    d = kg.direction(g, attack_norm).numpy()
    assert np.all(d[0] == 0.0) and np.all(np.isfinite(d))


@pytest.mark.parametrize("attack_norm", kg.ATTACK_NORMS)
def test_double_backprop_matches_closed_form_on_linear_model(attack_norm):
    model = linear_classifier(dtype="float64")
    x, y = batch(dtype="float64")
    loss, penalty = _penalty(model, x, y, attack_norm=attack_norm, estimator="double_backprop")
    g = linear_input_gradient(model, x, y)
    exact = ((g * numpy_direction(g, attack_norm)).sum(1)) ** 2
    np.testing.assert_allclose(penalty, exact, rtol=1e-10)
    p = kg.dual_norm(tf.constant(g), attack_norm).numpy()
    scale = g.shape[1] if attack_norm == "linf" else 1  # the l1 penalty is ||g||_1^2 / N
    np.testing.assert_allclose(penalty, p**2 / scale, rtol=1e-10)


@pytest.mark.parametrize("attack_norm", kg.ATTACK_NORMS)
def test_unsquared_double_backprop_is_epsilon_times_the_dual_norm(attack_norm):
    model = linear_classifier(dtype="float64")
    x, y = batch(dtype="float64")
    _, penalty = _penalty(model, x, y, attack_norm=attack_norm, estimator="double_backprop",
                          penalty_power=1, epsilon=0.25)
    g = linear_input_gradient(model, x, y)
    np.testing.assert_allclose(penalty, 0.25 * numpy_dual_norm(g, attack_norm), rtol=1e-10)


def _exact(g, attack_norm, penalty_power, epsilon):
    """The penalty in closed form: (g . d)^2, or epsilon (g . d) with power 1."""
    slope = (g * numpy_direction(g, attack_norm, penalty_power)).sum(1)
    return slope**2 if penalty_power == 2 else epsilon * slope


@pytest.mark.parametrize("attack_norm", kg.ATTACK_NORMS)
@pytest.mark.parametrize("difference,order", [("forward", 1), ("central", 2)])
@pytest.mark.parametrize("penalty_power,epsilon", [(2, None), (1, 0.1)])
def test_finite_difference_error_has_the_expected_order(attack_norm, difference, order,
                                                        penalty_power, epsilon):
    model = linear_classifier(dtype="float64")
    x, y = batch(dtype="float64")
    g = linear_input_gradient(model, x, y)
    exact = _exact(g, attack_norm, penalty_power, epsilon)
    errors = [
        np.abs(_penalty(model, x, y, h=h, attack_norm=attack_norm, difference=difference,
                        penalty_power=penalty_power, epsilon=epsilon)[1] - exact)
        for h in (1e-2, 5e-3)
    ]
    assert np.all(errors[0] < 0.05 * exact)
    ratio = errors[0] / errors[1]
    np.testing.assert_allclose(ratio, 2.0**order, rtol=0.1)


@pytest.mark.parametrize("attack_norm", kg.ATTACK_NORMS)
@pytest.mark.parametrize("difference", kg.DIFFERENCES)
def test_finite_difference_converges_to_double_backprop_on_smooth_cnn(attack_norm, difference):
    model = small_cnn("softplus", dtype="float64")
    x, y = batch(shape=(6, 6, 2), dtype="float64")
    _, exact = _penalty(model, x, y, attack_norm=attack_norm, estimator="double_backprop")
    errors = [
        np.max(np.abs(_penalty(model, x, y, h=h, attack_norm=attack_norm, difference=difference)[1] - exact) / exact)
        for h in (1e-2, 1e-3, 1e-4)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-3


def test_loss_is_the_per_example_cross_entropy():
    model = linear_classifier(dtype="float64")
    x, y = batch(dtype="float64")
    loss, _ = _penalty(model, x, y, attack_norm="l2")
    w, b = model.get_weights()
    from helpers import softmax
    np.testing.assert_allclose(loss, -np.log(softmax(x @ w + b)[np.arange(len(y)), y]), rtol=1e-10)


def test_examples_without_input_gradient_get_zero_penalty():
    inputs = keras.Input((1,))
    hidden = keras.layers.Dense(1, activation="relu", kernel_initializer="ones")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, kernel_initializer="ones")(hidden))
    x = np.array([[-1.0], [2.0]], "float32")  # the first example sits in the dead ReLU
    y = np.array([0, 1])
    with tf.GradientTape() as tape:
        _, penalty = kg.input_gradient_penalty(model, x, y, CE, attack_norm="l2")
        total = tf.reduce_sum(penalty)
    grads = tape.gradient(total, model.trainable_weights)
    assert penalty.numpy()[0] == 0.0
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)


def test_a_falling_secant_gives_the_unsquared_penalty_zero_and_no_gradient():
    """loss = sin(x) at x = 1.5 rises (slope cos 1.5 > 0) but falls over a step of 0.5: the
    unsquared forward difference would be negative; it is clamped at 0, while the squared
    one is the secant's square."""
    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")(inputs))
    x, y = np.array([[1.5]], "float32"), np.array([0.0], "float32")
    sine = lambda y_true, out: keras.ops.sin(out[:, 0])
    secant = (np.sin(2.0) - np.sin(1.5)) / 0.5
    assert secant < 0 < np.cos(1.5)
    options = dict(h=0.5, attack_norm="linf", training=False)
    with tf.GradientTape() as tape:
        _, unsquared = kg.input_gradient_penalty(model, x, y, sine, penalty_power=1, epsilon=0.1,
                                                 **options)
    assert unsquared.numpy()[0] == 0.0
    assert float(tape.gradient(unsquared, model.trainable_weights)[0][0, 0]) == 0.0
    _, squared = kg.input_gradient_penalty(model, x, y, sine, **options)  # d = sign(g) in 1-D
    np.testing.assert_allclose(squared.numpy()[0], secant**2, rtol=1e-5)


@pytest.mark.parametrize(
    "loss_fn",
    [
        "sparse_categorical_crossentropy",
        keras.losses.SparseCategoricalCrossentropy(),
        keras.losses.sparse_categorical_crossentropy,
    ],
    ids=["name", "object", "function"],
)
def test_loss_given_by_name_object_or_function_on_probabilities(loss_fn):
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    x, y = batch()
    loss, penalty = kg.input_gradient_penalty(model, x, y, loss_fn, estimator="double_backprop", attack_norm="l2")
    with tf.GradientTape() as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        per_example = keras.losses.sparse_categorical_crossentropy(y, model(xt))
    g = tape.gradient(per_example, xt).numpy()
    np.testing.assert_allclose(loss, per_example.numpy(), rtol=1e-6)
    np.testing.assert_allclose(penalty, np.linalg.norm(g, axis=1) ** 2, rtol=1e-5)


def test_per_example_loss_over_extra_axes_is_averaged():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    x, _ = batch(shape=(4,))
    target = np.zeros((8, 4), "float32")
    loss, _ = kg.input_gradient_penalty(model, x, target, lambda t, p: tf.square(p - t), attack_norm="l2")
    np.testing.assert_allclose(loss.numpy(), np.mean(model(x).numpy() ** 2, axis=1), rtol=1e-6)


def test_sample_weight_multiplies_loss_and_penalty():
    model = linear_classifier()
    x, y = batch()
    w = np.linspace(0.0, 2.0, len(y)).astype("float32")
    loss, penalty = kg.input_gradient_penalty(model, x, y, CE, attack_norm="l2")
    wloss, wpenalty = kg.input_gradient_penalty(model, x, y, CE, sample_weight=w, attack_norm="l2")
    np.testing.assert_allclose(wloss.numpy(), loss.numpy() * w, rtol=1e-6)
    np.testing.assert_allclose(wpenalty.numpy(), penalty.numpy() * w, rtol=1e-6)


@pytest.mark.parametrize("attack_norm", kg.ATTACK_NORMS)
def test_direction_spans_all_inputs_of_a_multi_input_model(attack_norm):
    single = linear_classifier()
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    dense = keras.layers.Dense(3)
    multi = keras.Model({"a": a, "b": b}, dense(keras.layers.Concatenate()([a, b])))
    dense.set_weights(single.get_weights())
    x, y = batch()
    _, expected = kg.input_gradient_penalty(single, x, y, CE, attack_norm=attack_norm)
    _, got = kg.input_gradient_penalty(multi, {"a": x[:, :3], "b": x[:, 3:]}, y, CE, attack_norm=attack_norm)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5)


def test_integer_pixels_are_cast_to_float_in_input_units():
    inputs = keras.Input((5,))
    scaled = keras.layers.Rescaling(1 / 255.0)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(scaled))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(8, 5)).astype("uint8")
    y = rng.integers(0, 3, size=8)
    _, from_uint8 = kg.input_gradient_penalty(model, x, y, CE, h=1.0, attack_norm="l2")
    _, from_float = kg.input_gradient_penalty(model, x.astype("float32"), y, CE, h=1.0, attack_norm="l2")
    np.testing.assert_allclose(from_uint8.numpy(), from_float.numpy(), rtol=1e-6)
    assert np.all(from_uint8.numpy() > 0)


def test_same_dropout_mask_in_clean_and_perturbed_passes():
    """With a fresh mask, the difference would measure the noise: huge, not ~ exact."""
    model = small_cnn("softplus", dropout=0.5)
    x, y = batch(shape=(6, 6, 2))
    kwargs = dict(training=True, attack_norm="l2")
    _, fd = kg.input_gradient_penalty(model, x, y, CE, h=1e-3, **kwargs)
    keras.utils.set_random_seed(0)
    model2 = small_cnn("softplus", dropout=0.5)
    _, exact = kg.input_gradient_penalty(model2, x, y, CE, estimator="double_backprop", **kwargs)
    np.testing.assert_allclose(fd.numpy(), exact.numpy(), rtol=0.02)


def test_perturbed_pass_leaves_batchnorm_statistics_alone():
    model = small_cnn(batchnorm=True)
    x, y = batch(shape=(6, 6, 2))
    model(x, training=True)  # one clean training pass: the reference statistics
    expected = [v.numpy() for v in model.non_trainable_variables]
    for v, e in zip(model.non_trainable_variables, expected):
        v.assign(np.zeros_like(e) if "mean" in v.path else np.ones_like(e))
    kg.input_gradient_penalty(model, x, y, CE, difference="central", training=True, attack_norm="l2")
    for v, e in zip(model.non_trainable_variables, expected):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-6)


def test_works_inside_tf_function_with_xla():
    model = small_cnn("softplus")
    x, y = batch(shape=(6, 6, 2))

    def objective(x, y):
        with tf.GradientTape() as tape:
            loss, penalty = kg.input_gradient_penalty(model, x, y, CE, attack_norm="l2")
            total = tf.reduce_mean(loss) + 0.5 * tf.reduce_mean(penalty)
        return total, tape.gradient(total, model.trainable_weights)

    eager_total, eager_grads = objective(x, y)
    xla_total, xla_grads = tf.function(objective, jit_compile=True)(x, y)
    np.testing.assert_allclose(xla_total.numpy(), eager_total.numpy(), rtol=1e-4)
    for a, b in zip(xla_grads, eager_grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(h=0.0), "h=0.0"),
        (dict(h=-1.0), "h=-1.0"),
        (dict(h=float("nan")), "h=nan"),
        (dict(attack_norm="l3"), "attack_norm='l3'.*'linf', 'l2', 'l1'"),
        (dict(difference="backward"), "difference='backward'.*'forward', 'central'"),
        (dict(estimator="adversarial"), "estimator='adversarial'"),
        (dict(penalty_power=0.5), "penalty_power=0.5.*use 2.*or 1"),
        (dict(penalty_power=1), "penalty_power=1 .*pass epsilon"),
        (dict(penalty_power=1, epsilon=float("inf")), "epsilon=inf"),
        (dict(epsilon=0.1), "epsilon=0.1 scales the unsquared penalty"),
    ],
)
def test_bad_options_are_named_in_the_error(kwargs, match):
    model = linear_classifier()
    x, y = batch()
    with pytest.raises(ValueError, match=match):
        kg.input_gradient_penalty(model, x, y, CE, **kwargs)


def test_non_differentiable_input_is_rejected():
    class TokenModel(keras.Model):
        def __init__(self):
            super().__init__()
            self.embed = keras.layers.Embedding(10, 3)
            self.out = keras.layers.Dense(2)

        def call(self, x):
            return self.out(keras.ops.mean(self.embed(keras.ops.cast(x, "int32")), axis=1))

    x = np.array([[1, 2], [3, 4]], "int32")
    with pytest.raises(ValueError, match="does not depend differentiably"):
        kg.input_gradient_penalty(TokenModel(), x, np.array([0, 1]), CE, attack_norm="l2")


def test_scalar_loss_is_rejected():
    model = linear_classifier()
    x, y = batch()
    with pytest.raises(ValueError, match="one value per example"):
        kg.input_gradient_penalty(model, x, y, lambda t, p: tf.reduce_mean(p), attack_norm="l2")
