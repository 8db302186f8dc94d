"""The shared tests on every Keras backend, and what is particular to each backend.

Under the default (TensorFlow) run, `test_the_shared_tests_pass_on` runs every test marked
`every_backend` (the models, regularisers, attacks, both protocols, the bound metrics, the
penalty, ...: one step equals the float64 reference for each variant, each attack against
its closed form, save/load, ...) again in a process with KERAS_BACKEND=jax and one with
KERAS_BACKEND=torch, with this file's tests for that backend.
"""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from helpers import batch, linear_classifier, small_cnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = keras.backend.backend()
ON_JAX = BACKEND == "jax"
jax_only = pytest.mark.skipif(not ON_JAX, reason="runs in the KERAS_BACKEND=jax pass")
torch_only = pytest.mark.skipif(BACKEND != "torch", reason="runs in the KERAS_BACKEND=torch pass")
CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
CE64 = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")


def run_python(args, backend, timeout=600, **kwargs):
    """Runs `python args...` from the checkout with the given Keras backend."""
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_ENABLE_X64="1",
               PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
    return subprocess.run([sys.executable] + list(args), cwd=ROOT, env=env, timeout=timeout,
                          capture_output=True, text=True, **kwargs)


SHARED = {"training": ("tests/models", "tests/regularizers", "tests/test_penalty.py",
                       "tests/test_optimizers.py", "tests/test_backends.py",
                       "tests/test_layers.py", "tests/test_per_example.py"),
          "evaluation": ("tests/attacks", "tests/evaluation", "tests/test_metrics.py")}
SHARED["all"] = SHARED["training"] + SHARED["evaluation"]
"""Where the tests marked every_backend (or for one backend only) are: JAX's pass in two
halves that two test workers run at the same time (it compiles each test's graphs),
PyTorch's (eager, a minute) whole."""


@pytest.mark.processes
@pytest.mark.skipif(BACKEND != "tensorflow", reason="the TensorFlow run starts the other passes")
@pytest.mark.parametrize("backend,half", [("jax", "training"), ("jax", "evaluation"),
                                          ("torch", "all")])
def test_the_shared_tests_pass_on(backend, half):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed: it comes with the `{backend}` extra "
                    f"(pip install 'keras_gradreg[{backend}]')")
    result = run_python(["-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-m",
                         f"every_backend or {backend}_only", *SHARED[half]], backend, timeout=900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout


def _cross_backend_problem(folder):
    """problem.npz and the two models saved on TensorFlow, for cross_backend_job.py."""
    rng = np.random.default_rng(0)
    init = keras.initializers.GlorotUniform(seed=0)
    base = keras.Sequential([keras.Input((8, 8, 1)),
                             keras.layers.Conv2D(4, 3, activation="softplus", kernel_initializer=init),
                             keras.layers.BatchNormalization(),
                             keras.layers.Flatten(),
                             keras.layers.Dense(10, kernel_initializer=init)])
    base.layers[0].kernel.assign(20.0 * base.layers[0].kernel)  # distances about epsilon
    x = rng.uniform(0.2, 0.8, (8, 8, 8, 1)).astype("float32")
    y = np.argmax(base.predict(x, verbose=0), axis=1)
    y[0] = (y[0] + 1) % 10  # one image misclassified already
    batch_x = rng.uniform(0.0, 1.0, (4, 8, 8, 1)).astype("float32")
    np.savez(folder / "problem.npz", x=x, y=y, batch_x=batch_x, batch_y=np.arange(4))
    clone = keras.models.clone_model(base)
    clone.set_weights(base.get_weights())
    models = {"gradreg": kg.GradRegModel.from_model(base, penalty_weight=1.0, h=0.1,
                                                    attack_norm="linf", penalty_every=2),
              "adversarial": kg.AdversarialTrainingModel.from_model(
                  clone, epsilon=0.1, attack="pgd", steps=2,
                  start=0.0)}  # (random starts are drawn by each backend's generator)
    for name, model in models.items():
        model.compile(keras.optimizers.SGD(0.1), CE)
        model.save(folder / f"{name}.keras")


@pytest.fixture(scope="module")
def tensorflow_results(tmp_path_factory):
    """cross_backend_job.py's results on TensorFlow, in this process."""
    import cross_backend_job

    folder = tmp_path_factory.mktemp("cross_backend")
    _cross_backend_problem(folder)
    cross_backend_job.main(str(folder))
    return folder, dict(np.load(folder / "tensorflow.npz"))


@pytest.mark.processes
@pytest.mark.skipif(BACKEND != "tensorflow", reason="the TensorFlow run starts the other backends")
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_models_attacks_and_protocols_agree_across_backends(backend, tensorflow_results):
    """The same .keras files and images on JAX and PyTorch as on TensorFlow: logits, every
    attack's breaks and distances, both protocols, the bound metrics and one training
    step of each model agree; their files load back on TensorFlow; no TensorFlow import."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed: it comes with the `{backend}` extra "
                    f"(pip install 'keras_gradreg[{backend}]')")
    folder, want = tensorflow_results
    result = run_python(["tests/cross_backend_job.py", str(folder)], backend)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    got = dict(np.load(folder / f"{backend}.npz"))
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        if key.endswith("_broken") or key == "autoattack_robust":
            np.testing.assert_array_equal(got[key], value, err_msg=key)
        else:  # float32; a step's finite difference divides rounding by h
            np.testing.assert_allclose(got[key], value, rtol=1e-4,
                                       atol=1e-4 if "_step_" in key else 1e-5, err_msg=key)
    assert want["pgd_broken"].sum() > 1 and not want["square_broken"].all()
    for name in ("gradreg", "adversarial"):
        loaded = kg.layers.load_model(folder / f"{backend}-{name}.keras")
        stepped = [got[f"{name}_step_{i}"] for i in range(len(loaded.get_weights()))]
        for weight, saved in zip(loaded.get_weights(), stepped):
            np.testing.assert_array_equal(weight, saved)
        original = kg.layers.load_model(folder / f"{name}.keras")
        assert type(loaded) is type(original) and loaded.get_config() == original.get_config()


def test_an_unsupported_backend_is_named_at_import(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "openvino")
    with pytest.raises(ImportError, match="tensorflow, jax, torch; KERAS_BACKEND is 'openvino'"):
        kg.backend.check_supported()


@jax_only
@pytest.mark.jax_only
def test_a_jax_custom_loop_step_equals_gradregmodel_fit():
    """jax.jit(jax.grad) of stateless_input_gradient_penalty: the same SGD step as fit."""
    import jax

    x, y = batch(dtype="float64")
    base = linear_classifier(dtype="float64")
    start = [np.array(v.value) for v in base.trainable_variables]  # fit donates the buffers

    @jax.jit
    def step(trainable, non_trainable):
        def objective(t):
            (loss, penalty), new = kg.stateless_input_gradient_penalty(
                base, t, non_trainable, x, y, CE64, h=0.05, attack_norm="linf")
            return loss.mean() + 1.0 / 2 * penalty.mean(), new

        grads, new = jax.grad(objective, has_aux=True)(trainable)
        return [w - 0.5 * g for w, g in zip(trainable, grads)], new

    custom, _ = step(start, [v.value for v in base.non_trainable_variables])
    model = kg.GradRegModel.from_model(base, penalty_weight=1.0, h=0.05, attack_norm="linf")
    model.compile(keras.optimizers.SGD(0.5), CE64)
    import tensorflow as tf
    model.fit(tf.data.Dataset.from_tensors((x, y)), verbose=0)
    for got, want in zip(model.get_weights(), custom):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-12)
    assert not np.allclose(np.asarray(custom[0]), start[0])


@torch_only
@pytest.mark.torch_only
@pytest.mark.parametrize("estimator", ["finite_difference", "double_backprop"])
def test_a_pytorch_loop_step_equals_gradregmodel_fit(estimator):
    """input_gradient_penalty in a plain PyTorch loop (autograd, torch.optim.SGD): the same
    step as GradRegModel's, the exact double backprop included."""
    import torch

    x, y = batch(dtype="float64")
    options = dict(h=0.05, attack_norm="linf", estimator=estimator)
    base = linear_classifier(dtype="float64")
    start = [np.array(w) for w in base.get_weights()]
    parameters = [v.value for v in base.trainable_variables]
    optimizer = torch.optim.SGD(parameters, lr=0.5)
    loss, penalty = kg.input_gradient_penalty(base, x, y, CE64, **options)
    (loss.mean() + 1.0 / 2 * penalty.mean()).backward()
    optimizer.step()
    custom = [np.array(w) for w in base.get_weights()]
    base.set_weights(start)
    model = kg.GradRegModel.from_model(base, penalty_weight=1.0, **options)
    model.compile(keras.optimizers.SGD(0.5), CE64)
    model.train_on_batch(torch.from_numpy(x), torch.from_numpy(y))  # (fit casts NumPy float64 to float32)
    for got, want in zip(model.get_weights(), custom):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert not np.allclose(custom[0], start[0])


@torch_only
@pytest.mark.torch_only
def test_a_pytorch_steps_logs_are_not_changed_by_the_next_step():
    """Keras' Sum.result() on PyTorch is its variable's own tensor, updated in place by
    the next step: the logs a step returns are copies (an async callback reads late)."""
    x, y = batch(n=8)
    model = kg.GradRegModel.from_model(linear_classifier(), penalty_weight=1.0, attack_norm="l2")
    model.compile(keras.optimizers.SGD(0.1), CE)
    first = model.train_step((x[:4], y[:4]))
    x[5, 2] = np.nan
    second = model.train_step((x[4:], y[4:]))
    assert (float(first["skipped_steps"]), float(second["skipped_steps"])) == (0.0, 1.0)


@jax_only
@pytest.mark.jax_only
def test_perturbed_pass_on_jax_uses_the_clean_dropout_mask_and_leaves_batchnorm_alone():
    """At h -> 0 the forward difference tends to the directional derivative g . d only if
    both passes drop the same units; BatchNorm statistics move by the clean pass only."""
    x, y = batch(n=8, shape=(6, 6, 2), dtype="float64")
    for model in (small_cnn(dropout=0.5, dtype="float64"), small_cnn(batchnorm=True, dtype="float64")):
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        estimate = kg.stateless_input_gradient_penalty(
            model, trainable, non_trainable, x, y, CE64, h=1e-6, attack_norm="l2")
        plain = model.stateless_call(trainable, non_trainable, x, training=True)[1]
        for got, want in zip(estimate[1], plain):  # seeds and statistics: as one plain call
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert any(not np.array_equal(np.asarray(a), np.asarray(b))
                   for a, b in zip(plain, non_trainable))
    # (examples interact through BatchNorm's batch statistics, so only the dropout
    # model's per-example derivative is g . d)
    exact = kg.stateless_input_gradient_penalty(
        model := small_cnn(dropout=0.5, dtype="float64"), [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables], x, y, CE64, estimator="double_backprop", attack_norm="l2")
    estimate = kg.stateless_input_gradient_penalty(
        model, [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables], x, y, CE64, h=1e-6, attack_norm="l2")
    np.testing.assert_allclose(np.asarray(estimate[0][1]), np.asarray(exact[0][1]), rtol=1e-4)


@jax_only
@pytest.mark.jax_only
def test_a_lazy_train_step_called_directly_decides_in_the_step_as_fit_does_outside():
    """fit compiles the penalised and the plain step apart (see backend.jax); a direct
    call of train_step, jitted by the user, takes the lax.cond inside: same weights."""
    import jax

    x, y = batch(dtype="float64")
    models = []
    for _ in range(2):
        model = kg.GradRegModel.from_model(linear_classifier(dtype="float64"), penalty_weight=1.0,
                                           h=0.05, penalty_every=2, attack_norm="l2")
        model.compile(keras.optimizers.SGD(0.5), CE64)
        models.append(model)
    import tensorflow as tf
    models[0].fit(tf.data.Dataset.from_tensors((x, y)).repeat(3), verbose=0)
    direct = models[1]
    direct.optimizer.build(direct.trainable_variables)
    state = tuple([v.value for v in variables] for variables in (
        direct.trainable_variables, direct.non_trainable_variables, direct.optimizer.variables,
        direct.metrics_variables))
    step = jax.jit(direct.train_step)
    for _ in range(3):
        logs, state = step(state, (x, y))
    for got, want in zip(state[0], models[0].get_weights()):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)
    assert not np.allclose(np.asarray(state[0][0]), linear_classifier(dtype="float64").get_weights()[0])


@pytest.mark.every_backend
def test_a_training_run_xla_compiles_its_step_on_jax_and_as_asked_on_tensorflow(tmp_path):
    """On JAX, Keras without jit_compile runs a step op by op (12 steps: 10 s instead of 4);
    PyTorch refuses it by name."""
    from keras_gradreg import training

    for asked in (False, True):
        config = training.TrainConfig(model_dir=str(tmp_path / str(asked)), epochs=1,
                                      batch_size=32, train_limit=32, jit_compile=asked)
        if asked and BACKEND == "torch":
            with pytest.raises(ValueError, match="jit_compile=True is not offered on the torch"):
                training.train(config, verbose=0)
            continue
        model, _, _ = training.train(config, verbose=0)
        assert model.jit_compile == (asked or ON_JAX)


@pytest.mark.every_backend
@pytest.mark.parametrize("owner,attribute,where", [
    api for api in kg.backend.PRIVATE_KERAS_APIS  # those of this pass's backend: a
    if not api[2].endswith(")")  # trailing "(TensorFlow, JAX)" names the backends using it
    or {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}[BACKEND]
    in api[2].rsplit("(", 1)[1].rstrip(")").split(", ")])
def test_the_private_keras_apis_the_backends_use_still_exist(owner, attribute, where):
    """Fails naming the private API a Keras (or TensorFlow) upgrade removed, and its user."""
    if owner == "tensorflow":
        import tensorflow as tf

        found, holder = True, tf
        for part in attribute.split("."):
            found = found and hasattr(holder, part)
            holder = getattr(holder, part, None)
    elif owner == "keras.Variable":
        found = hasattr(keras.Variable(1.0), attribute)
    elif owner == "keras.utils.Progbar":
        found = hasattr(keras.utils.Progbar(1), attribute)
    elif owner == "tf.function":
        import tensorflow as tf

        found = hasattr(tf.function(lambda: 0), attribute)
    else:
        model = kg.GradRegModel.from_model(linear_classifier(), attack_norm="l2")
        model.compile("sgd", CE)
        found = hasattr(model, attribute)
    assert found, (f"{owner}.{attribute} is gone in Keras {keras.__version__} (checked on "
                   f"{', '.join(kg.backend.KERAS_VERSIONS_CHECKED)}); {where} relies on it.")
