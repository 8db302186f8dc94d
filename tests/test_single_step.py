"""Single-step adversarial training and its regularisers: examples in closed form, one
training step of each regulariser against a float64 NumPy objective differentiated by
central differences (independent of either backend's autodiff, GradAlign's double
backpropagation included), ELLE-A's schedule, Keras conventions, and replicas."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gradreg as kg
from helpers import batch, linear_classifier, run_model_test, small_cnn, softmax

AT = kg.adversarial_training
CE64 = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")
CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
SEED = 4
EPS = float(np.float32(0.1))  # the model's radius is a float32 variable


def _ce(w, b, x, y):
    return -np.log(softmax(x @ w + b)[np.arange(len(y)), y])


def _input_gradient(w, b, x, y):
    p = softmax(x @ w + b)
    p[np.arange(len(y)), y] -= 1.0
    return p @ w.T


def _draws(x, epsilon, attack_norm="linf", noise=1.0):
    """The model's draws at optimizer step 0: the start (stream 0), then stream 1."""
    seed = np.array([SEED, 0], np.int32)
    start = keras.ops.convert_to_numpy(kg.primitives.random_in_ball(
        x.shape, noise * epsilon, attack_norm, seed, "float64"))
    return seed, np.clip(x + start, 0, 1)


def _objective(regularizer, weight, w0, b0, x, y, epsilon=EPS, h=0.01):
    """The step-0 objective as a NumPy function of (W, b), the draws held fixed."""
    seed, start = _draws(x, epsilon)
    x_adv = np.clip(np.clip(start + AT.FGSM_STEP * epsilon * np.sign(_input_gradient(w0, b0, start, y)),
                            x - epsilon, x + epsilon), 0, 1)
    stream = keras.ops.convert_to_numpy(kg.primitives.seed_stream(seed, 1))
    if regularizer == "local_linearity":
        x_a, x_b, alpha = (keras.ops.convert_to_numpy(t) for t in kg.sample_local_linearity_triplet(
            x, epsilon, stream))
        x_c = (1 - alpha)[:, None] * x_a + alpha[:, None] * x_b

        def extra(w, b):
            error = _ce(w, b, x_c, y) - (1 - alpha) * _ce(w, b, x_a, y) - alpha * _ce(w, b, x_b, y)
            return weight * np.mean(error ** 2)
    elif regularizer == "gradient_penalty":
        d = np.sign(_input_gradient(w0, b0, x, y)) / np.sqrt(x.shape[1])  # a constant

        def extra(w, b):
            return weight / 2 * np.mean(((_ce(w, b, x + h * d, y) - _ce(w, b, x, y)) / h) ** 2)
    elif regularizer == "grad_align":
        noisy = np.clip(x + keras.ops.convert_to_numpy(kg.primitives.random_in_ball(
            x.shape, epsilon, "linf", stream, "float64")), 0, 1)
        first = _input_gradient(w0, b0, x, y)  # a constant

        def extra(w, b):
            second = _input_gradient(w, b, noisy, y)
            cos = np.sum(first * second, 1) / (np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1))
            return weight * np.mean(1 - cos)
    else:
        extra = lambda w, b: 0.0  # noqa: E731
    return lambda w, b: np.mean(_ce(w, b, x_adv, y)) + extra(w, b)


def _central_gradient(f, params, step=1e-6):
    grads = []
    for i, p in enumerate(params):
        g = np.zeros_like(p)
        for index in np.ndindex(p.shape):
            shifted = [q.copy() for q in params]
            shifted[i][index] += step
            up = f(*shifted)
            shifted[i][index] -= 2 * step
            g[index] = (up - f(*shifted)) / (2 * step)
        grads.append(g)
    return grads


def _one_step(regularizer, weight, x, y, lr=0.5):
    base = linear_classifier(dtype="float64")
    model = AT.SingleStepAdversarialModel.from_model(
        base, epsilon=0.1, regularizer=regularizer, regularizer_weight=weight, seed=SEED)
    model.compile(keras.optimizers.SGD(lr), CE64)
    w0, b0 = base.get_weights()
    # a tf.data batch keeps float64 (NumPy arrays would be cast to float32)
    logs = model.fit(tf.data.Dataset.from_tensors((x, y)), verbose=0).history
    return (w0, b0), base.get_weights(), logs


@pytest.mark.both_backends
@pytest.mark.parametrize("regularizer,weight", [("none", 0.0), ("local_linearity", 300.0),
                                                ("gradient_penalty", 1.0), ("grad_align", 5.0)])
def test_one_step_equals_the_numpy_objective_differentiated_by_central_differences(regularizer, weight):
    x, y = batch(n=8, dtype="float64")
    (w0, b0), got, logs = _one_step(regularizer, weight, x, y)
    objective = _objective(regularizer, weight, w0, b0, x, y)
    grads = _central_gradient(objective, [w0, b0])
    for g, p, new in zip(grads, (w0, b0), got):
        np.testing.assert_allclose(new, p - 0.5 * g, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(logs["loss"][0], objective(w0, b0), rtol=1e-6)  # a float32 tracker
    if regularizer != "none":  # the regulariser changed the step
        plain = _central_gradient(_objective("none", 0.0, w0, b0, x, y), [w0, b0])
        assert max(np.abs(a - b).max() for a, b in zip(grads, plain)) > 1e-4
        assert logs["regularizer_weight"][0] == pytest.approx(weight)


def _examples(**options):
    """(weights, the model, its examples, x, y, its radius as it computes with it) of a
    binary float64 linear classifier at step 0."""
    base = linear_classifier(num_classes=2, dtype="float64")
    model = AT.SingleStepAdversarialModel.from_model(base, seed=SEED, **options)
    model.compile("sgd", CE64)
    model.optimizer.build(model.trainable_variables)
    x, y = batch(n=64, num_classes=2, dtype="float64")
    got = keras.ops.convert_to_numpy(model.adversarial_examples(x, y))
    return base.get_weights(), model, got, x, y, float(keras.ops.convert_to_numpy(model.current_epsilon))


@pytest.mark.both_backends
def test_fgsm_rs_takes_one_step_of_1_25_eps_from_the_seeded_start_back_into_the_ball():
    (w, b), model, got, x, y, eps = _examples(epsilon=0.1)
    _, start = _draws(x, eps)
    want = np.clip(np.clip(start + 1.25 * eps * np.sign(_input_gradient(w, b, start, y)), x - eps, x + eps),
                   0, 1)
    np.testing.assert_allclose(got, want, atol=1e-12)
    model.optimizer.iterations.assign(1)
    assert not np.allclose(keras.ops.convert_to_numpy(model.adversarial_examples(x, y)), got)


@pytest.mark.both_backends
def test_n_fgsm_steps_eps_from_noise_of_2_eps_without_projecting_back():
    (w, b), model, got, x, y, eps = _examples(epsilon=0.1, method="n_fgsm")
    _, start = _draws(x, eps, noise=AT.N_FGSM_NOISE)
    want = np.clip(start + eps * np.sign(_input_gradient(w, b, start, y)), 0, 1)
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert eps < np.abs(got - x).max() <= 3 * eps + 1e-12  # outside the eps-ball: not projected


@pytest.mark.both_backends
def test_l2_fgsm_rs_steps_along_the_normalised_gradient_and_stays_in_the_l2_ball():
    (w, b), model, got, x, y, _ = _examples(epsilon=0.5, attack_norm="l2")
    _, start = _draws(x, 0.5, "l2")
    g = _input_gradient(w, b, start, y)
    step = start + 1.25 * 0.5 * g / np.linalg.norm(g, axis=1, keepdims=True)
    delta = step - x
    scale = np.minimum(1, 0.5 / np.linalg.norm(delta, axis=1, keepdims=True))
    np.testing.assert_allclose(got, np.clip(x + scale * delta, 0, 1), atol=1e-12)
    assert np.linalg.norm(got - x, axis=1).max() <= 0.5 + 1e-12


@pytest.mark.both_backends
def test_adaptive_weight_switches_on_at_a_spike_and_decays():
    """ELLE-A: 0 until an error exceeds mean + 2 std of the errors before it (from the
    third step), then the full weight, times 0.99 per step; a NaN error changes nothing."""
    model = AT.SingleStepAdversarialModel.from_model(
        linear_classifier(), epsilon=0.1, regularizer="adaptive_local_linearity",
        regularizer_weight=50.0)
    errors = [1.0, 1.2, 0.8, 1.1, 5.0, 1.0, 0.9, float("nan"), 6.0, 1.0]
    got = [float(keras.ops.convert_to_numpy(model._adaptive_weight(keras.ops.convert_to_tensor(e, "float32"))))
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


ON_BOTH = pytest.mark.both_backends  # the JAX pass round-trips two, the TensorFlow pass four


@pytest.mark.parametrize("options", [  # ELLE-A runs ELLE's error; N-FGSM the unregularised step
    dict(method="n_fgsm", attack_norm="l2", epsilon=1.0),
    pytest.param(dict(regularizer="adaptive_local_linearity", regularizer_weight=10.0), marks=ON_BOTH),
    dict(regularizer="gradient_penalty", regularizer_weight=1.0),
    pytest.param(dict(regularizer="grad_align", regularizer_weight=1.0), marks=ON_BOTH)])
def test_model_round_trips_and_trains_with_and_without_xla(tmp_path, options):
    x, y = batch(n=8, shape=(6, 6, 2))
    options = dict(dict(epsilon=0.1, seed=5), **options)
    model = run_model_test(lambda: AT.SingleStepAdversarialModel.from_model(small_cnn(), **options),
                           x, y, tmp_path, ("epsilon", "attack_norm", "method", "step_size",
                                            "regularizer", "regularizer_weight", "h", "seed"))
    if options.get("regularizer", "none") == "adaptive_local_linearity":
        assert float(keras.ops.convert_to_numpy(model.adaptive_state[0].value)) == 4  # 2 fits x 2 steps


@pytest.mark.parametrize("kwargs,match", [
    (dict(regularizer="elle"), "regularizer='elle'"),
    (dict(regularizer="local_linearity"), "needs a weight > 0"),
    (dict(regularizer_weight=1.0), "a weight > 0 needs a regulariser"),
    (dict(regularizer="grad_align", regularizer_weight=-1.0), "regularizer_weight=-1.0"),
    (dict(regularizer="grad_align", regularizer_weight=float("nan")), "regularizer_weight=nan"),
    (dict(method="pgd"), "method='pgd'"),
    (dict(attack_norm="l1"), "attack_norm='l1'"),
    (dict(epsilon=2.0), "epsilon=2.0.*attack_norm='l2'"),
    (dict(epsilon=9.0, attack_norm="l2"), r"epsilon=9.0.*l2 diameter of the data range, 8.48"),
])
def test_bad_arguments_are_named_before_anything_is_built(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AT.SingleStepAdversarialModel.from_model(small_cnn(), **kwargs)


def _train_mirrored(strategy, x, y, weights, **options):
    with strategy.scope():
        base = small_cnn("softplus", dtype="float64")
        base.set_weights(weights)
        model = AT.SingleStepAdversarialModel.from_model(base, **dict(dict(epsilon=0.1, seed=3), **options))
        model.compile(keras.optimizers.SGD(0.5, momentum=0.9), CE64)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    history = model.fit(data, epochs=2, verbose=0)
    return model.get_weights(), history.history


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute")
@pytest.mark.parametrize("options", [dict(regularizer="local_linearity", regularizer_weight=30.0),
                                     dict(method="n_fgsm", attack_norm="l2", epsilon=0.5,
                                          regularizer="adaptive_local_linearity",
                                          regularizer_weight=30.0)])
def test_two_replicas_give_the_same_weights_as_one_device(options):
    """Each replica draws its slice of the global batch's random draws, and ELLE-A's
    state follows the mean error over the replicas."""
    x, y = batch(n=32, shape=(6, 6, 2), dtype="float64")
    weights = small_cnn("softplus", dtype="float64").get_weights()
    one = _train_mirrored(tf.distribute.OneDeviceStrategy("CPU:0"), x, y, weights, **options)
    # Not TensorFlow's collective all-reduce, whose executor keeps each instance key's dtype
    # from the previous test's strategy in this process (a float64 step then clashes).
    mirrored = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"],
                                              cross_device_ops=tf.distribute.ReductionToOneDevice())
    two = _train_mirrored(mirrored, x, y, weights, **options)
    for a, b in zip(one[0], two[0]):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)
    for key in ("loss", "regularizer", "regularizer_weight"):
        np.testing.assert_allclose(two[1][key], one[1][key], rtol=1e-6)
    assert not np.allclose(one[0][0], weights[0])
