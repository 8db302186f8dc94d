"""Small models and reference computations shared by the tests."""

import keras
from keras import ops
import numpy as np
import pytest

import keras_gradreg as kg

SMALL_BUDGET = kg.AutoAttackBudget(apgd_steps=100, target_classes=9, fab_steps=100,
                                   square_queries=1000)
"""AutoAttack's budgets but Square's (1,000 queries): the attacks' tests."""


def linear_classifier(num_features=5, num_classes=3, dtype="float32", seed=0):
    """logits = x W + b, with random non-zero W and b."""
    rng = np.random.default_rng(seed)
    inputs = keras.Input((num_features,), dtype=dtype)
    dense = keras.layers.Dense(num_classes, dtype=dtype)
    model = keras.Model(inputs, dense(inputs))
    dense.set_weights([rng.normal(size=(num_features, num_classes)), rng.normal(size=num_classes)])
    return model


def small_cnn(activation="softplus", dtype=None, batchnorm=False, dropout=0.0, seed=0):
    """A tiny CNN on 6x6x2 inputs with 3 classes, seeded layers (dtype None: the policy)."""
    init = keras.initializers.GlorotUniform(seed=seed)
    layers = [
        keras.Input((6, 6, 2), dtype=dtype),
        keras.layers.Conv2D(4, 3, activation=activation, kernel_initializer=init, dtype=dtype),
    ]
    if batchnorm:
        layers.append(keras.layers.BatchNormalization(dtype=dtype))
    if dropout:
        layers.append(keras.layers.Dropout(dropout, seed=seed, dtype=dtype))
    layers += [
        keras.layers.Flatten(dtype=dtype),
        keras.layers.Dense(3, kernel_initializer=init, dtype=dtype),
    ]
    return keras.Sequential(layers)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def linear_input_gradient(model, x, y):
    """grad_x of the per-example cross-entropy of a linear classifier, in closed form."""
    w, b = [np.asarray(v, dtype=np.float64) for v in model.get_weights()]
    p = softmax(x @ w + b)
    p[np.arange(len(y)), y] -= 1.0
    gradient = p @ w.T
    assert gradient.shape == x.shape
    return gradient


def numpy_direction(g, attack_norm, penalty_power=2):
    """The direction of penalty.direction, written independently, by attack norm: unit
    l2 length for the squared penalty, unit length in the attack norm for power 1."""
    norm = {"l2": "l2", "linf": "l1", "l1": "linf"}[attack_norm]  # the penalised dual norm
    if norm == "l2":
        n = np.linalg.norm(g, axis=1, keepdims=True)
        return np.divide(g, n, out=np.zeros_like(g), where=n > 0)
    if norm == "l1":
        return np.sign(g) / (1.0 if penalty_power == 1 else np.sqrt(g.shape[1]))
    d = np.zeros_like(g)
    j = np.argmax(np.abs(g), axis=1)
    d[np.arange(len(g)), j] = np.sign(g[np.arange(len(g)), j])
    return d


def numpy_dual_norm(g, attack_norm):
    """||g||_*, the dual of the attack norm, per row, written independently."""
    order = {"l2": 2, "linf": 1, "l1": np.inf}[attack_norm]
    return np.linalg.norm(g, ord=order, axis=1)


def batch(n=8, shape=(5,), num_classes=3, seed=1, dtype="float32"):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n,) + tuple(shape)).astype(dtype)
    y = rng.integers(0, num_classes, size=n)
    return x, y


def weights_close(a, b, rtol=1e-6, atol=1e-7):
    """Asserts two models' weights equal to the tolerance."""
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)


def run_model_test(make, x, y, tmp_path, config_keys, loss=None, jit_compile=(False, True),
                   deterministic_step=True):
    """keras-hub's run_layer_test for our keras.Model subclasses.

    Checks, for the model `make()` builds: a config round trip through `from_config`
    (JSON-serialisable, same settings), a symbolic call, one `fit` step for each of
    `jit_compile` (finite loss, the weights move), a `.keras` round trip that keeps the
    class, the settings and the predictions, and training that continues from the loaded
    model exactly as from the original (with `deterministic_step`; a step that draws from
    TensorFlow's global random state, as PGD's random start does, only keeps training).
    """
    import json
    import os

    loss = loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = make()
    config = model.get_config()
    json.dumps(config)  # NumPy scalars would not serialise
    clone = type(model).from_config(config)
    assert type(clone) is type(model)
    for key in config_keys:
        assert getattr(clone, key) == getattr(model, key), key
    symbolic = model(keras.Input(x.shape[1:]))
    assert tuple(symbolic.shape) == (None,) + tuple(model.output.shape[1:])
    for jit in jit_compile:
        model = make()
        before = [w.copy() for w in model.get_weights()]
        model.compile(keras.optimizers.SGD(0.1), loss, metrics=["accuracy"], jit_compile=jit)
        if jit and not kg.backend.current().COMPILES_STEPS:  # PyTorch: refused before a step
            with pytest.raises(ValueError, match="compiled with jit_compile=True"):
                model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
            assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
            model.compile(keras.optimizers.SGD(0.1), loss, metrics=["accuracy"])
        history = model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0).history
        assert np.isfinite(history["loss"][0]) and "accuracy" in history
        assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
    path = os.path.join(str(tmp_path), "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    for key in config_keys:
        assert getattr(loaded, key) == getattr(model, key), key
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    model.fit(x, y, batch_size=4, shuffle=False, verbose=0)
    history = loaded.fit(x, y, batch_size=4, shuffle=False, verbose=0).history
    if deterministic_step:
        weights_close(model, loaded, rtol=1e-5)
    else:
        assert np.isfinite(history["loss"][0])
    return model


def run_metric_test(make, tmp_path):
    """The same for our metrics: config round trip, evaluate inside a GradRegModel with and
    without `jit_compile` (equal values), and a `.keras` round trip that keeps the value."""
    import json
    import os

    metric = make()
    config = metric.get_config()
    json.dumps(config)
    assert type(metric).from_config(config).get_config() == config
    x, y = batch(n=12, shape=(6, 6, 2))
    values = []
    for jit_compile in (False, True) if kg.backend.current().COMPILES_STEPS else (False, False):
        keras.utils.set_random_seed(0)
        model = kg.GradRegModel.from_model(small_cnn("softplus"), penalty_weight=0.1, attack_norm="l2")
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=[make()], jit_compile=jit_compile)
        values.append(model.evaluate(x, y, batch_size=5, return_dict=True, verbose=0)[metric.name])
    np.testing.assert_allclose(values[1], values[0], rtol=1e-4)
    assert np.isfinite(values[0])
    path = os.path.join(str(tmp_path), "with_metric.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    again = loaded.evaluate(x, y, batch_size=5, return_dict=True, verbose=0)[metric.name]
    np.testing.assert_allclose(again, values[1], rtol=1e-5)


class TraceCounter(keras.layers.Layer):
    """The identity, counting the traces of compiled functions that call it (it sees a
    symbolic tensor only while one is traced: a graph, a jitted function) in `traces`,
    the batch size of each."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.traces = []

    def call(self, x):
        if kg.backend.current().in_trace(x):
            self.traces.append(x.shape[0])
        return x


def linear_distance(w, logits, y, norm):
    """Each image's exact distance to a linear classifier's boundary (logits = x @ w + b):
    min over other classes j of (z_y - z_j) / ||w_y - w_j||_*, the exact distance."""
    dual = {"l2": 2, "linf": 1}[norm]
    out = np.full(len(y), np.inf)
    for j in range(w.shape[1]):
        diff = np.linalg.norm(w[:, y] - w[:, [j]], ord=dual, axis=0)
        gap = logits[np.arange(len(y)), y] - logits[:, j]
        out = np.where(y == j, out, np.minimum(out, gap / np.where(diff > 0, diff, np.inf)))
    return out


def linear_image_problem(classes=3, seed=0, n=16, side=2, scale=1.0, spread=0.1):
    """A linear classifier on side x side x 1 images whose closest boundary points stay
    inside [0, 1], its images (uniform in 0.5 +- spread), labels, weights and logits (the
    model's logits times scale)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(side * side, classes))
    b = -0.5 * w.sum(axis=0) + 0.05 * rng.normal(size=classes)
    inputs = keras.Input((side, side, 1))
    dense = keras.layers.Dense(classes)
    model = keras.Model(inputs, scale * dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([w, b])
    x = rng.uniform(0.5 - spread, 0.5 + spread, size=(n, side, side, 1)).astype("float32")
    logits = x.reshape(n, -1) @ w + b
    return model, x, logits.argmax(1), w, logits


ON_TENSORFLOW = keras.backend.backend() == "tensorflow"
"""CleverHans' attacks (fgm, mim, cw, spsa) run on TensorFlow only: elsewhere the tests
attack with the keras.ops attacks in their place."""
ONE_STEP = "fgm" if ON_TENSORFLOW else "pgd"
"""The cheapest attack of the minimum-distance protocol on the backend."""
GRADIENT_FREE = "spsa" if ON_TENSORFLOW else "square"
"""A gradient-free attack of the protocol on the backend."""
NORM_ATTACKS = ([("linf", ("fgm", "pgd", "mim")), ("l2", ("fgm", "pgd", "cw"))] if ON_TENSORFLOW
                else [("linf", ("pgd", "apgd_ce", "fab_t")), ("l2", ("pgd", "apgd_ce", "fab_t"))])
"""Each norm's attacks of the protocol on the backend."""

FAST = kg.AttackBudget(steps=10, search_steps=12, cw_binary_steps=4, cw_iterations=200,
                         cw_learning_rate=0.05, spsa_samples=64)
"""Smaller budgets of the minimum-distance protocol, for its tests."""


def evaluation_problem(seed=0, n=24, classes=3):
    """A linear classifier on 2x2x1 images whose closest boundary points stay inside [0, 1]
    (images in [0.35, 0.65]): what the evaluations' tests attack."""
    return linear_image_problem(classes, seed, n, spread=0.15)


def judge_for(model, x, attack_norm, batch_size=128, top_k=1):
    """The model as the evaluations' attacks see it (attacks.judge), on images like x."""
    from keras_gradreg.attacks import judge

    model_fn, _, _ = judge.class_scores(model, x, batch_size)
    return judge.Judge(model_fn, 0.0, 1.0, batch_size, attack_norm, judge.compiled_for(model),
                       top_k)


def attack_fn(model, x, name, attack_norm, budget=None, seed=0, top_k=1, **settings):
    """registry.make_attack's f(x, y, epsilon) for attack `name` on the model (SMALL_BUDGET)."""
    return kg.attacks.make_attack(
        name, judge_for(model, x, attack_norm, top_k=top_k),
        kg.AttackBudget(autoattack=budget or SMALL_BUDGET, **settings), seed)


def broken_by(model, x, y, attack, attack_norm, epsilon, budget=None, seed=0, top_k=1, **settings):
    """(which images `attack` breaks at radii epsilon, verified: misclassified (the label
    outside the top k), in range and in radius; the distances of its examples)."""
    x_adv = attack_fn(model, x, attack, attack_norm, budget, seed, top_k, **settings)(
        x, y, np.asarray(epsilon, np.float32))
    return judge_for(model, x, attack_norm, top_k=top_k).verify(x_adv, x, y, epsilon)


def quantised(model, levels):
    """The model on its input rounded to `levels` levels: zero input gradients everywhere,
    a gradient-masking model."""
    inputs = keras.Input(model.inputs[0].shape[1:])
    rounded = keras.layers.Lambda(
        lambda t: 0.0 * t + ops.stop_gradient(ops.round(t * levels) / levels))(inputs)
    return keras.Model(inputs, model(rounded))


def lowest_class_distance(w, logits, y):
    """Each image's exact l2 distance to the points where its label scores below every
    other class of a 3-class linear classifier (logits = x @ w + b): out of the top 2.
    The nearest point of the intersection of two half-spaces a_j . d >= c_j: one
    projection if it lies in the other half-space, else the point where both are tight."""
    out = np.empty(len(y))
    for i, label in enumerate(y):
        others = [j for j in range(w.shape[1]) if j != label]
        a = np.stack([w[:, j] - w[:, label] for j in others])
        c = np.array([logits[i, label] - logits[i, j] for j in others])
        single = [c[j] * a[j] / (a[j] @ a[j]) for j in range(2)]
        feasible = [d for d in single if np.all(a @ d >= c - 1e-12)]
        both = a.T @ np.linalg.solve(a @ a.T, c)
        out[i] = min([np.linalg.norm(d) for d in feasible] + [np.linalg.norm(both)])
    return out


def run_config(tmp_path, **kwargs):
    """A small training run's TrainConfig (3 epochs of 256 digits) in tmp_path/run."""
    from keras_gradreg import training  # TensorFlow's data pipelines: not for every test

    settings = dict(model_dir=str(tmp_path / "run"), epochs=3, batch_size=64, train_limit=256)
    settings.update(kwargs)
    return training.TrainConfig(**settings)


class Interrupt(Exception):
    """What a test raises to stop a run where a kill would."""


def interrupt_after(config, monkeypatch, last_epoch):
    """Trains config until epoch `last_epoch` is checkpointed, then dies."""
    import pytest

    from keras_gradreg import training

    original = training.callbacks.Checkpoint.on_epoch_end

    def die(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == last_epoch:
            raise Interrupt()

    with monkeypatch.context() as patch:
        patch.setattr(training.callbacks.Checkpoint, "on_epoch_end", die)
        with pytest.raises(Interrupt):
            training.train(config, verbose=0)
