"""AdversarialTrainingModel: its examples in closed form for each attack, one training step
of every attack and regulariser (TRADES included) against a float64 NumPy objective
differentiated by central differences (independent of either backend's autodiff,
GradAlign's double backpropagation included), Keras conventions, and replicas."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import batch
from helpers import linear_classifier
from helpers import run_model_test
from helpers import small_cnn
from helpers import softmax
import keras_gradreg as kg
from keras_gradreg.attacks import ball
from keras_gradreg.attacks import pgd
from keras_gradreg.regularizers import trades

CE64 = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")
SEED = 4
EPS = float(np.float32(0.1))  # the model's radius is a float32 variable


def _ce(w, b, x, y):
    return -np.log(softmax(x @ w + b)[np.arange(len(y)), y])


def _kl(w, b, x, x_adv):
    p, q = softmax(x @ w + b), softmax(x_adv @ w + b)
    return np.sum(p * (np.log(p) - np.log(q)), axis=1)


def _input_gradient(w, b, x, y):
    p = softmax(x @ w + b)
    p[np.arange(len(y)), y] -= 1.0
    return p @ w.T


def _kl_gradient(w, b, reference, x_adv):
    """grad_x' KL(softmax(reference) || softmax(x' W + b)), the reference fixed."""
    return (softmax(x_adv @ w + b) - softmax(reference)) @ w.T


def _numpy(t):
    return keras.ops.convert_to_numpy(t)


def _start(x, radius, attack_norm="linf"):
    """The model's random start at optimizer step 0: uniform in the ball, clipped."""
    return np.clip(x + _numpy(ball.uniform_in_ball(x.shape, radius, attack_norm,
                                                   np.array([SEED, 0], np.int32), "float64")),
                   0, 1)


def _examples_numpy(w0, b0, x, y, attack, epsilon=EPS, steps=None):
    """The examples of step 0, written out: FGSM-RS, N-FGSM, 2-step PGD, TRADES' PGD."""
    if attack == "trades":
        x_adv = _start(x, trades.START * epsilon)
        for _ in range(steps):
            step = trades.STEP_SIZE * epsilon * np.sign(_kl_gradient(w0, b0, x @ w0 + b0, x_adv))
            x_adv = np.clip(np.clip(x_adv + step, x - epsilon, x + epsilon), 0, 1)
        return x_adv
    if attack == "n_fgsm":
        start = _start(x, pgd.N_FGSM_NOISE * epsilon)
        return np.clip(start + epsilon * np.sign(_input_gradient(w0, b0, start, y)), 0, 1)
    x_adv = _start(x, epsilon)
    step = pgd.FGSM_STEP if attack == "fgsm_rs" else pgd.TRAINING_REACH / steps
    for _ in range(steps or 1):
        x_adv = x_adv + step * epsilon * np.sign(_input_gradient(w0, b0, x_adv, y))
        x_adv = np.clip(np.clip(x_adv, x - epsilon, x + epsilon), 0, 1)
    return x_adv


def _objective(attack, regularizer, weight, w0, b0, x, y, epsilon=EPS, h=0.01, steps=None):
    """The step-0 objective as a NumPy function of (W, b), the draws held fixed."""
    x_adv = _examples_numpy(w0, b0, x, y, "trades" if regularizer == "trades" else attack,
                            epsilon, steps)
    stream = _numpy(ball.seed_stream(np.array([SEED, 0], np.int32), 1))
    if regularizer == "local_linearity":
        x_a, x_b, alpha = (_numpy(t) for t in kg.sample_local_linearity_triplet(x, epsilon, stream))
        x_c = (1 - alpha)[:, None] * x_a + alpha[:, None] * x_b

        def extra(w, b):
            error = _ce(w, b, x_c, y) - (1 - alpha) * _ce(w, b, x_a, y) - alpha * _ce(w, b, x_b, y)
            return weight * np.mean(error ** 2)
    elif regularizer == "gradient_penalty":
        d = np.sign(_input_gradient(w0, b0, x, y)) / np.sqrt(x.shape[1])  # a constant

        def extra(w, b):
            return weight / 2 * np.mean(((_ce(w, b, x + h * d, y) - _ce(w, b, x, y)) / h) ** 2)
    elif regularizer == "grad_align":
        noisy = np.clip(x + _numpy(ball.uniform_in_ball(x.shape, epsilon, "linf", stream,
                                                        "float64")), 0, 1)
        first = _input_gradient(w0, b0, x, y)  # a constant

        def extra(w, b):
            second = _input_gradient(w, b, noisy, y)
            cos = np.sum(first * second, 1) / (np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1))
            return weight * np.mean(1 - cos)
    elif regularizer == "trades":
        return lambda w, b: np.mean(_ce(w, b, x, y)) + weight * np.mean(_kl(w, b, x, x_adv))
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


CASES = [  # attack, regularizer, weight, steps
    ("fgsm_rs", "none", 0.0, None), ("n_fgsm", "none", 0.0, None), ("pgd", "none", 0.0, 2),
    ("fgsm_rs", "local_linearity", 300.0, None), ("fgsm_rs", "gradient_penalty", 1.0, None),
    ("fgsm_rs", "grad_align", 5.0, None), ("pgd", "trades", 6.0, 3)]


@pytest.mark.every_backend
@pytest.mark.parametrize("attack,regularizer,weight,steps", CASES,
                         ids=["-".join(map(str, case[:2])) for case in CASES])
def test_one_step_equals_the_numpy_objective_differentiated_by_central_differences(
        attack, regularizer, weight, steps):
    x, y = batch(n=8, dtype="float64")
    base = linear_classifier(dtype="float64")
    options = dict(trades_options(steps) if regularizer == "trades" else dict(steps=steps))
    model = kg.AdversarialTrainingModel.from_model(
        base, epsilon=0.1, attack=attack, regularizer=regularizer, regularizer_weight=weight,
        seed=SEED, **options)
    model.compile(keras.optimizers.SGD(0.5), CE64)
    w0, b0 = base.get_weights()
    # a tf.data batch keeps float64 (NumPy arrays would be cast to float32)
    logs = model.fit(tf.data.Dataset.from_tensors((x, y)), verbose=0).history
    objective = _objective(attack, regularizer, weight, w0, b0, x, y, steps=steps)
    grads = _central_gradient(objective, [w0, b0])
    for g, p, new in zip(grads, (w0, b0), base.get_weights()):
        np.testing.assert_allclose(new, p - 0.5 * g, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(logs["loss"][0], objective(w0, b0), rtol=1e-6)  # a float32 tracker
    if regularizer != "none":  # the regulariser changed the step
        plain = _central_gradient(_objective(attack, "none", 0.0, w0, b0, x, y, steps=steps),
                                  [w0, b0])
        assert max(np.abs(a - b).max() for a, b in zip(grads, plain)) > 1e-6
        assert logs["regularizer_weight"][0] == pytest.approx(weight)


def trades_options(steps):
    """TRADES' attack settings, as training.wrap gives them."""
    return dict(steps=steps, step_size=trades.STEP_SIZE, start=trades.START)


def _examples(**options):
    """(weights, the model, its examples, x, y, its radius as it computes with it) of a
    binary float64 linear classifier at step 0."""
    base = linear_classifier(num_classes=2, dtype="float64")
    model = kg.AdversarialTrainingModel.from_model(base, seed=SEED, **options)
    model.compile("sgd", CE64)
    model.optimizer.build(model.trainable_variables)
    x, y = batch(n=64, num_classes=2, dtype="float64")
    got = _numpy(model.adversarial_examples(x, y))
    return base.get_weights(), model, got, x, y, float(_numpy(model.current_epsilon))


@pytest.mark.every_backend
@pytest.mark.parametrize("attack,steps", [("fgsm_rs", None), ("n_fgsm", None), ("pgd", 3),
                                          ("trades", 4)])
def test_each_attacks_examples_are_its_closed_form_from_the_seeded_start(attack, steps):
    """FGSM-RS: one step of 1.25 epsilon back into the ball; N-FGSM: epsilon from noise of 2 epsilon,
    not projected; PGD: steps of 1.75 epsilon / steps; TRADES: ascending the divergence from
    the clean prediction. A new optimizer step draws another start."""
    options = (dict(trades_options(steps), regularizer="trades", regularizer_weight=1.0)
               if attack == "trades" else dict(attack=attack, steps=steps))
    (w, b), model, got, x, y, epsilon = _examples(epsilon=0.1, **options)
    np.testing.assert_allclose(got, _examples_numpy(w, b, x, y, attack, epsilon, steps), atol=1e-12)
    if attack == "n_fgsm":
        assert epsilon < np.abs(got - x).max() <= 3 * epsilon + 1e-12  # outside the epsilon-ball
    else:
        assert np.abs(got - x).max() <= epsilon + 1e-12
    model.optimizer.iterations.assign(1)
    assert not np.allclose(_numpy(model.adversarial_examples(x, y)), got)


@pytest.mark.every_backend
def test_l2_fgsm_rs_steps_along_the_normalised_gradient_and_stays_in_the_l2_ball():
    (w, b), model, got, x, y, _ = _examples(epsilon=0.5, attack_norm="l2", attack="fgsm_rs")
    start = _start(x, 0.5, "l2")
    g = _input_gradient(w, b, start, y)
    step = start + 1.25 * 0.5 * g / np.linalg.norm(g, axis=1, keepdims=True)
    delta = step - x
    scale = np.minimum(1, 0.5 / np.linalg.norm(delta, axis=1, keepdims=True))
    np.testing.assert_allclose(got, np.clip(x + scale * delta, 0, 1), atol=1e-12)
    assert np.linalg.norm(got - x, axis=1).max() <= 0.5 + 1e-12


def test_pgd_at_examples_of_an_image_model_stay_within_epsilon_and_raise_the_loss():
    base = kg.architectures.small_cnn((28, 28, 1), 10)
    model = kg.AdversarialTrainingModel.from_model(base, epsilon=0.1)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    (x, y), _ = kg.load_offline_mnist()
    x_adv = _numpy(model.adversarial_examples(x[:32], y[:32]))
    assert np.abs(x_adv - x[:32]).max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert float(loss(y[:32], base(x_adv))) > float(loss(y[:32], base(x[:32])))


ON_BOTH = pytest.mark.every_backend  # the JAX pass round-trips three, the TensorFlow pass six


@pytest.mark.parametrize("options", [  # ELLE-A runs ELLE's error; N-FGSM the unregularised step
    dict(attack="pgd", steps=2),
    dict(attack="n_fgsm", attack_norm="l2", epsilon=1.0),
    pytest.param(dict(attack="fgsm_rs", regularizer="adaptive_local_linearity",
                      regularizer_weight=10.0), marks=ON_BOTH),
    dict(attack="fgsm_rs", regularizer="gradient_penalty", regularizer_weight=1.0),
    pytest.param(dict(attack="fgsm_rs", regularizer="grad_align", regularizer_weight=1.0),
                 marks=ON_BOTH),
    pytest.param(dict(trades_options(2), regularizer="trades", regularizer_weight=6.0),
                 marks=ON_BOTH)])
def test_model_round_trips_and_trains_with_and_without_xla(tmp_path, options):
    x, y = batch(n=8, shape=(6, 6, 2))
    options = dict(dict(epsilon=0.1, seed=5), **options)
    model = run_model_test(lambda: kg.AdversarialTrainingModel.from_model(small_cnn(), **options),
                           x, y, tmp_path, ("epsilon", "attack_norm", "attack", "steps",
                                            "step_size", "start", "regularizer",
                                            "regularizer_weight", "h", "seed"))
    if options.get("regularizer", "none") == "adaptive_local_linearity":
        assert float(_numpy(model.adaptive_state[0].value)) == 4  # 2 fits x 2 steps


@pytest.mark.parametrize("kwargs,match", [
    (dict(regularizer="elle"), "regularizer='elle'"),
    (dict(regularizer="local_linearity"), "needs a weight > 0"),
    (dict(regularizer_weight=1.0), "a weight > 0 needs a regulariser"),
    (dict(regularizer="grad_align", regularizer_weight=-1.0), "regularizer_weight=-1.0"),
    (dict(regularizer="grad_align", regularizer_weight=float("nan")), "regularizer_weight=nan"),
    (dict(attack="fgsm"), "attack='fgsm'"),
    (dict(attack="fgsm_rs", steps=3), "steps=3: attack='fgsm_rs' takes one step"),
    (dict(steps=0), "steps=0"),
    (dict(step_size=-1.0), "step_size=-1.0"),
    (dict(start=-0.5), "start=-0.5"),
    (dict(seed=1.5), "seed=1.5"),
    (dict(clip_min=1.0, clip_max=0.0), "clip_max=0.0"),
    (dict(attack_norm="l1"), "attack_norm='l1'"),
    (dict(epsilon=0.0), "epsilon=0.0"),
    (dict(epsilon=float("nan")), "epsilon=nan"),
    (dict(epsilon=2.0), "epsilon=2.0.*attack_norm='l2'"),
    (dict(epsilon=9.0, attack_norm="l2"), r"epsilon=9.0.*l2 diameter of the data range, 8.48"),
])
def test_bad_arguments_are_named_before_anything_is_built(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kg.AdversarialTrainingModel.from_model(small_cnn(), **kwargs)


def _train_mirrored(strategy, x, y, weights, **options):
    with strategy.scope():
        base = small_cnn("softplus", dtype="float64")
        base.set_weights(weights)
        model = kg.AdversarialTrainingModel.from_model(base, **dict(dict(epsilon=0.1, seed=3), **options))
        model.compile(keras.optimizers.SGD(0.5, momentum=0.9), CE64)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    history = model.fit(data, epochs=2, verbose=0)
    return model.get_weights(), history.history


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute")
@pytest.mark.parametrize("options", [
    dict(attack="fgsm_rs", regularizer="local_linearity", regularizer_weight=30.0),
    dict(attack="n_fgsm", attack_norm="l2", epsilon=0.5, regularizer="adaptive_local_linearity",
         regularizer_weight=30.0),
    dict(attack="pgd", steps=2),
    dict(trades_options(2), regularizer="trades", regularizer_weight=6.0)])
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
    keys = ("loss", "regularizer", "regularizer_weight") if "regularizer" in options else ("loss",)
    for key in keys:
        np.testing.assert_allclose(two[1][key], one[1][key], rtol=1e-6)
    assert not np.allclose(one[0][0], weights[0])
