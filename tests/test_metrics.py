"""The adversarial-distance bound metrics: closed forms, dataset-wide exactness, curvature."""

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from helpers import batch, run_metric_test, small_cnn, softmax


CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
EPSILON = 0.05


def _per_image(metric):
    return metric.per_image_bounds()


@pytest.mark.parametrize("norm,dual_order", [("l2", 2), ("linf", 1)])
@pytest.mark.every_backend
def test_lipschitz_bound_of_a_linear_binary_classifier_is_the_exact_distance(norm, dual_order):
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(4, 2)), rng.normal(size=2)
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(inputs))
    dense.set_weights([w, b])
    x, y = rng.normal(size=(20, 4)).astype("float32"), rng.integers(0, 2, 20)
    metric = kg.LipschitzBound(norm, margin="logit")
    metric.update_from_model(model, x, y)
    logits = x @ w + b
    margin = logits[np.arange(20), y] - logits[np.arange(20), 1 - y]
    distance = np.maximum(margin, 0) / np.linalg.norm(w[:, 1] - w[:, 0], ord=dual_order)
    bounds, _ = _per_image(metric)
    np.testing.assert_allclose(bounds, distance, rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(metric.result()), distance.mean(), rtol=1e-5)
    # moving each correctly classified point by its distance towards the boundary flips it
    step = np.sign(w[:, 1] - w[:, 0])[None] if norm == "linf" else (w[:, 1] - w[:, 0])[None] / np.linalg.norm(w[:, 1] - w[:, 0])
    moved = x + np.where(y[:, None] == 0, 1, -1) * distance[:, None] * 1.0001 * step
    assert np.all(np.argmax(moved @ w + b, axis=1)[margin > 0] != y[margin > 0])


def _reference(model, x, y, epsilon):
    """NumPy bounds from one pass over all images, with the dataset-wide L and C."""
    lin = kg.bound_terms(model, x, y, attack_norm="linf")
    cur = kg.bound_terms(model, x, y, attack_norm="l2", curvature_iterations=kg.metrics.DEFAULT_CURVATURE_ITERATIONS)
    gap, g1 = keras.ops.convert_to_numpy(lin.gap), keras.ops.convert_to_numpy(lin.grad_norm)
    lbound = gap / g1.max()
    g2, c = keras.ops.convert_to_numpy(cur.grad_norm), max(keras.ops.convert_to_numpy(cur.curvature).max(), 0.0)
    cbound = np.where(gap > 0, (-g2 + np.sqrt(g2**2 + 2 * c * gap)) / c, 0.0)
    return {"lipschitz_bound_linf": lbound.mean(),
            f"lipschitz_bound_linf_ge_{epsilon:g}": (lbound >= epsilon).mean(),
            "curvature_bound_l2": cbound.mean(),
            f"curvature_bound_l2_ge_{epsilon:g}": (cbound >= epsilon).mean()}


def _bound_model():
    model = kg.GradRegModel.from_model(small_cnn("softplus"), penalty_weight=0.1, attack_norm="l2")
    model.compile("sgd", CE, metrics=[kg.LipschitzBound("linf"), kg.LipschitzBound("linf", epsilon=EPSILON),
                                      kg.CurvatureBound(), kg.CurvatureBound(epsilon=EPSILON)])
    return model


def test_evaluate_gives_the_dataset_wide_value_whatever_the_batches():
    model = _bound_model()
    x, y = batch(n=40, shape=(6, 6, 2))
    expected = _reference(model, x, y, EPSILON)
    assert 0 < expected[f"lipschitz_bound_linf_ge_{EPSILON:g}"] < 1  # the threshold bites
    order = np.random.default_rng(0).permutation(40)
    for batch_size, idx in [(7, np.arange(40)), (32, np.arange(40)), (16, order)]:
        got = model.evaluate(x[idx], y[idx], batch_size=batch_size, return_dict=True, verbose=0)
        for key, value in expected.items():
            np.testing.assert_allclose(got[key], value, rtol=2e-4, err_msg=key)


@pytest.mark.every_backend
def test_bounds_are_computed_in_validation_only_not_in_training_steps(monkeypatch):
    model = _bound_model()
    x, y = batch(n=16, shape=(6, 6, 2))
    model.evaluate(x, y, verbose=0)  # builds the metrics (PyTorch's build calls them eagerly)
    calls = []
    original = kg.metrics.bound_terms
    monkeypatch.setattr(kg.metrics, "bound_terms", lambda *a, **k: calls.append(1) or original(*a, **k))
    model.test_function = None  # traced again, with the patch (TensorFlow, JAX)
    history = model.fit(x, y, batch_size=8, verbose=0).history
    assert not calls and not any("bound" in key for key in history)
    history = model.fit(x, y, batch_size=8, validation_data=(x, y), verbose=0).history
    assert calls  # traced for validation
    assert {"val_lipschitz_bound_linf", f"val_curvature_bound_l2_ge_{EPSILON:g}"} <= set(history)
    assert not {"lipschitz_bound_linf", "curvature_bound_l2"} & set(history)


@pytest.mark.parametrize("labels", ["column", "one_hot"])
@pytest.mark.every_backend
def test_labels_of_shape_n_1_and_one_hot_give_the_same_bounds(labels):
    model = small_cnn("softplus")
    x, y = batch(n=12, shape=(6, 6, 2))
    other = y[:, None] if labels == "column" else np.eye(3)[y]
    assert len(set(y)) == 3  # a label read as class 0 would change the bounds
    for attack_norm in ("linf", "l2"):
        expected = kg.bound_terms(model, x, y, attack_norm=attack_norm)
        got = kg.bound_terms(model, x, other, attack_norm=attack_norm)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got.gap), keras.ops.convert_to_numpy(expected.gap), rtol=1e-6)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got.grad_norm), keras.ops.convert_to_numpy(expected.grad_norm), rtol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="the reference Hessian is TensorFlow's batch_jacobian")
def test_curvature_matches_the_top_eigenvalue_of_the_exact_hessian():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="softplus")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(8, activation="tanh")(hidden)))
    x, y = batch(n=24, shape=(4,))
    x = 3 * x - 1.5
    terms = kg.bound_terms(model, x, y, attack_norm="l2", curvature_iterations=50)
    import tensorflow as tf

    xt = tf.constant(x)
    with tf.GradientTape() as outer:
        outer.watch(xt)
        with tf.GradientTape() as inner:
            inner.watch(xt)
            loss = tf.reduce_sum(kg.misclassification_margin(model(xt), y))
        grad = inner.gradient(loss, xt)
    hessians = keras.ops.convert_to_numpy(outer.batch_jacobian(grad, xt))
    eigenvalues = np.linalg.eigvalsh(hessians)
    assert np.any(np.abs(eigenvalues[:, 0]) > eigenvalues[:, -1])  # the negative-dominant case occurs
    np.testing.assert_allclose(keras.ops.convert_to_numpy(terms.curvature), eigenvalues[:, -1], rtol=0.01,
                               atol=0.01 * np.abs(eigenvalues).max())


@pytest.mark.every_backend
def test_curvature_bound_equals_the_papers_formula_and_tends_to_the_linear_one():
    gap, g, c = np.array([0.3, 0.0, 0.5]), np.array([2.0, 1.0, 0.7]), 1.7
    paper = np.where(gap > 0, (-g + np.sqrt(g**2 + 2 * c * gap)) / c, 0.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kg.curvature_bound(gap, g, c)), paper, rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kg.curvature_bound(gap, g, 0.0)), gap / g, rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kg.curvature_bound(gap, g, -3.0)), gap / g, rtol=1e-6)


@pytest.mark.every_backend
def test_probability_margin_is_the_papers_loss():
    logits = np.array([[2.0, 1.0, -1.0], [0.0, 3.0, 1.0]], "float32")
    p = softmax(logits.astype("float64"))
    margin = keras.ops.convert_to_numpy(kg.misclassification_margin(logits, np.array([0, 0])))
    np.testing.assert_allclose(margin, [p[0, 1] - p[0, 0], p[1, 1] - p[1, 0]], rtol=1e-6)
    from_probs = kg.misclassification_margin(p, np.array([0, 0]), from_logits=False, margin="logit")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(from_probs), [-1.0, 3.0], rtol=1e-5)


def test_saved_model_keeps_its_bound_metrics(tmp_path):
    model = _bound_model()
    x, y = batch(n=16, shape=(6, 6, 2))
    before = model.evaluate(x, y, return_dict=True, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    after = keras.models.load_model(path).evaluate(x, y, return_dict=True, verbose=0)
    assert set(before) == set(after)
    for key in before:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-5)


@pytest.mark.every_backend
def test_a_plain_keras_model_gets_a_clear_error():
    model = small_cnn()
    model.compile("sgd", CE, metrics=[kg.LipschitzBound("linf")])
    with pytest.raises(ValueError, match="needs the model and its inputs"):
        model.evaluate(*batch(n=4, shape=(6, 6, 2)), verbose=0)


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.every_backend
def test_too_many_images_give_nan_and_an_error_never_a_silent_overwrite(jit_compile):
    """Under XLA an out-of-range write would be dropped and an assert would not stop it."""
    model = kg.GradRegModel.from_model(small_cnn("softplus"), penalty_weight=0.1, attack_norm="l2")
    model.compile("sgd", CE, metrics=[kg.LipschitzBound("linf", max_images=5)],
                  jit_compile=jit_compile)
    x, y = batch(n=8, shape=(6, 6, 2))
    assert np.isnan(model.evaluate(x, y, batch_size=4, return_dict=True, verbose=0)["lipschitz_bound_linf"])
    assert np.isfinite(model.evaluate(x[:4], y[:4], batch_size=4, return_dict=True,
                                      verbose=0)["lipschitz_bound_linf"])
    metric = kg.LipschitzBound("l2", max_images=5)
    metric.update_from_model(small_cnn(), *batch(n=6, shape=(6, 6, 2)))
    assert np.isnan(keras.ops.convert_to_numpy(metric.result()))
    with pytest.raises(ValueError, match="max_images=5 images and 1 more"):
        metric.per_image_bounds()


@pytest.mark.parametrize("jit_compile", [False, True])
def test_evaluate_with_xla_gives_the_same_bounds(jit_compile):
    model = _bound_model()
    model.compile("sgd", CE, metrics=[kg.LipschitzBound("linf"), kg.CurvatureBound()],
                  jit_compile=jit_compile)
    x, y = batch(n=20, shape=(6, 6, 2))
    expected = _reference(model, x, y, EPSILON)
    got = model.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
    for key in ("lipschitz_bound_linf", "curvature_bound_l2"):
        np.testing.assert_allclose(got[key], expected[key], rtol=2e-4, err_msg=key)


@pytest.mark.every_backend
def test_metric_configs_saved_with_the_old_norm_key_still_load():
    config = kg.LipschitzBound("l2", epsilon=0.1).get_config()
    config["norm"] = config.pop("attack_norm")
    assert kg.LipschitzBound.from_config(config).attack_norm == "l2"


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: kg.LipschitzBound("l1"), "attack_norm='l1'"),
        (lambda: kg.LipschitzBound("linf", margin="hinge"), "margin='hinge'"),
        (lambda: kg.LipschitzBound("linf", epsilon=-0.1), "epsilon=-0.1"),
        (lambda: kg.LipschitzBound("linf", epsilon=float("nan")), "epsilon=nan"),
        (lambda: kg.LipschitzBound("linf", max_images=0), "max_images=0"),
        (lambda: kg.CurvatureBound(attack_norm="linf"), "attack_norm='linf'.*l2 bound only"),
        (lambda: kg.CurvatureBound("linf"), "'linf'.*l2 bound only"),
        (lambda: kg.CurvatureBound(curvature_iterations=0), "curvature_iterations=0"),
        (lambda: kg.LipschitzBound("l2", curvature_iterations=5), "no curvature_iterations"),
    ],
)
@pytest.mark.every_backend
def test_bad_arguments_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("make", [lambda: kg.LipschitzBound("linf", epsilon=0.05),
                                  lambda: kg.LipschitzBound("l2", margin="logit"),
                                  lambda: kg.CurvatureBound(epsilon=0.05, curvature_iterations=4)],
                         ids=["lipschitz_linf", "lipschitz_l2_logit", "curvature"])
def test_metric_round_trips_and_evaluates_with_and_without_xla(make, tmp_path):
    run_metric_test(make, tmp_path)
