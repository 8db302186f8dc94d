"""GradRegModel: exact updates, Keras conventions, saving, mixed precision, bad input."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import batch
from helpers import linear_classifier
from helpers import numpy_direction
from helpers import run_model_test
from helpers import small_cnn
from helpers import weights_close
import keras_gradreg as kg

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
CE64 = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")
VARIANTS = [
    dict(attack_norm=n, difference=d, estimator=m)
    for n in kg.ATTACK_NORMS
    for d, m in [("forward", "finite_difference"), ("central", "finite_difference"),
                 ("forward", "double_backprop")]
]
UNSQUARED = [dict(variant, penalty_power=1, epsilon=0.1, clean_weight=0.75) for variant in VARIANTS]
"""The unsquared penalty, with a clean-loss weight, in every variant. The weight is one
float32 holds exactly: Keras' compiled loss is float32 even for a float64 model, so its
gradient carries the weight rounded to float32 (0.8 moves the weights by 2e-8)."""


def _compile(model, lr=0.1, loss=CE, **kwargs):
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=loss, **kwargs)
    return model


def _reference_step(w, b, x, y, *, lam, h, attack_norm, difference, estimator, lr,
                    penalty_power=2, epsilon=None, clean_weight=1.0):
    """One SGD step on the paper's objective, or with penalty_power 1 on clean_weight *
    loss + lam * epsilon * ||grad_x loss||_*, written out independently for logits = xW+b."""
    w, b = tf.Variable(w), tf.Variable(b)
    onehot = tf.one_hot(y, w.shape[1], dtype=w.dtype)

    def loss_at(inputs):
        return -tf.reduce_sum(onehot * tf.nn.log_softmax(inputs @ w + b), axis=1)

    with tf.GradientTape() as tape:
        g = (tf.nn.softmax(x @ w + b) - onehot) @ tf.transpose(w)  # closed-form grad_x
        if estimator == "double_backprop":
            slope = {"l2": tf.norm(g, axis=1), "l1": tf.reduce_sum(tf.abs(g), 1),
                     "linf": tf.reduce_max(tf.abs(g), 1)}[kg.DUAL_NORMS[attack_norm]]
            if penalty_power == 2 and attack_norm == "linf":
                slope = slope / np.sqrt(x.shape[1])  # the paper's scaling of the l1 norm
        else:
            d = numpy_direction(g.numpy(), attack_norm, penalty_power)
            behind = loss_at(x - h * d) if difference == "central" else loss_at(x)
            step = 2 * h if difference == "central" else h
            slope = (loss_at(x + h * d) - behind) / step
        penalty = slope**2 / 2 if penalty_power == 2 else epsilon * slope
        objective = clean_weight * tf.reduce_mean(loss_at(x)) + lam * tf.reduce_mean(penalty)
    gw, gb = tape.gradient(objective, [w, b])
    return [w.numpy() - lr * gw.numpy(), b.numpy() - lr * gb.numpy()]


@pytest.mark.every_backend
@pytest.mark.parametrize("variant", VARIANTS + UNSQUARED,
                         ids=lambda v: "-".join(map(str, list(v.values())[:4])))
def test_one_step_equals_an_independent_computation(variant):
    base = linear_classifier(dtype="float64")
    x, y = batch(dtype="float64")
    expected = _reference_step(*base.get_weights(), x, y, lam=1.0, h=0.05, lr=0.5, **variant)
    model = _compile(kg.GradRegModel.from_model(base, penalty_weight=1.0, h=0.05, **variant), lr=0.5, loss=CE64)
    # a tf.data batch keeps float64 (NumPy arrays would be cast to float32)
    model.fit(tf.data.Dataset.from_tensors((x, y)), epochs=1, verbose=0)
    for got, want in zip(model.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-9)


@pytest.mark.every_backend
def test_unsquared_penalty_at_h_epsilon_is_fgsm_training_without_a_random_start():
    """loss(x) + epsilon * (loss(x + h d) - loss(x)) / h with h = epsilon and d = sign(g)
    is loss(x + epsilon sign(g)): two steps give FGSM training's weights (one step of
    epsilon from x, no random start; the images stay inside the data range)."""
    x, y = batch(n=16, shape=(6, 6, 2), seed=3)
    x = 0.3 + 0.4 * x
    models = [
        kg.GradRegModel.from_model(small_cnn("gelu"), penalty_weight=1.0, h=0.1,
                                   attack_norm="linf", penalty_power=1, epsilon=0.1),
        kg.AdversarialTrainingModel.from_model(small_cnn("gelu"), epsilon=0.1, attack="pgd",
                                               steps=1, step_size=1.0, start=0.0),
    ]
    for model in models:
        _compile(model, lr=0.5).fit(x, y, batch_size=8, shuffle=False, verbose=0)
    for fd, fgsm in zip(*[m.trainable_weights for m in models]):
        np.testing.assert_allclose(np.asarray(fd), np.asarray(fgsm), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(models[0].trainable_weights[0]),
                           small_cnn("gelu").get_weights()[0])


@pytest.mark.every_backend
def test_lazy_penalty_penalises_every_kth_step_with_k_times_the_weight():
    """penalty_every=2: steps 0 and 2 follow the objective with 2 lambda, step 1 is plain."""
    base = linear_classifier(dtype="float64")
    x, y = batch(dtype="float64")
    expected = base.get_weights()
    for lam in (2.0, 0.0, 2.0):
        expected = _reference_step(*expected, x, y, lam=lam, h=0.05, lr=0.5, attack_norm="l2",
                                   difference="forward", estimator="finite_difference")
    model = _compile(kg.GradRegModel.from_model(base, penalty_weight=1.0, h=0.05, penalty_every=2, attack_norm="l2"),
                     lr=0.5, loss=CE64)
    model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(3), epochs=1, verbose=0)
    for got, want in zip(model.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-9)


@pytest.mark.every_backend
def test_warmup_raises_the_penalty_weight_linearly_over_its_steps():
    """penalty_warmup=4: steps 0, 1, 2 follow the objective with lambda / 4, 2 / 4, 3 / 4;
    a run resumed from a .keras file keeps counting (the optimizer's iterations)."""
    base = linear_classifier(dtype="float64")
    x, y = batch(dtype="float64")
    expected = base.get_weights()
    for share in (0.25, 0.5, 0.75):
        expected = _reference_step(*expected, x, y, lam=2.0 * share, h=0.05, lr=0.5,
                                   attack_norm="l2", difference="forward",
                                   estimator="finite_difference")
    model = _compile(kg.GradRegModel.from_model(base, penalty_weight=2.0, h=0.05,
                                                penalty_warmup=4, attack_norm="l2"),
                     lr=0.5, loss=CE64)
    model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(3), epochs=1, verbose=0)
    for got, want in zip(model.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-9)


@pytest.mark.every_backend
def test_lazy_penalty_logs_average_over_the_penalised_steps():
    """With lr = 0 every step sees the same weights: the logged penalty is that of one
    penalised step, and the logged loss averages to loss + lambda / 2 * penalty."""
    base = linear_classifier()
    x, y = batch()
    loss, penalty = (keras.ops.convert_to_numpy(t) for t in kg.input_gradient_penalty(
        base, x, y, CE, attack_norm="l2"))
    model = _compile(kg.GradRegModel.from_model(base, penalty_weight=2.0, penalty_every=3, attack_norm="l2"), lr=0.0)
    history = model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(3), epochs=1, verbose=0).history
    np.testing.assert_allclose(history["penalty"][0], np.mean(penalty), rtol=1e-5)
    np.testing.assert_allclose(history["loss"][0], np.mean(loss) + np.mean(penalty), rtol=1e-5)


@pytest.mark.every_backend
def test_lazy_penalty_keeps_its_phase_through_a_keras_file(tmp_path):
    """The phase is the optimizer's iteration count, which the .keras file keeps."""
    x, y = batch(n=12, shape=(6, 6, 2))
    model = _compile(kg.GradRegModel.from_model(small_cnn(), penalty_weight=1.0, penalty_every=2, attack_norm="l2"))
    model.fit(x, y, batch_size=4, shuffle=False, verbose=0)  # 3 steps: the next is lazy
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.penalty_every == 2
    for m in (model, loaded):
        m.fit(x, y, batch_size=4, shuffle=False, verbose=0)
    weights_close(model, loaded, rtol=1e-5)


@pytest.mark.every_backend
def test_zero_penalty_weight_trains_exactly_like_keras_model():
    x, y = batch(n=12, shape=(6, 6, 2))
    plain = small_cnn(batchnorm=True, dropout=0.3)
    gradreg = kg.GradRegModel.from_model(small_cnn(batchnorm=True, dropout=0.3), penalty_weight=0.0, attack_norm="l2")
    gradreg.set_weights(plain.get_weights())
    for model in (plain, gradreg):
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9), CE)
        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    weights_close(plain, gradreg)
    assert any("moving_mean" in v.path for v in gradreg.non_trainable_variables)


@pytest.mark.every_backend
def test_penalty_changes_the_weights_but_not_the_batchnorm_statistics():
    """With lr = 0 only BatchNorm statistics move: they must match plain training."""
    x, y = batch(n=12, shape=(6, 6, 2))
    plain = _compile(small_cnn(batchnorm=True), lr=0.0)
    gradreg = _compile(kg.GradRegModel.from_model(small_cnn(batchnorm=True), penalty_weight=1.0,
                                                  difference="central", attack_norm="l2"), lr=0.0)
    gradreg.set_weights(plain.get_weights())
    for model in (plain, gradreg):
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    weights_close(plain, gradreg)
    np.testing.assert_allclose(plain.predict(x, verbose=0), gradreg.predict(x, verbose=0), rtol=1e-6)


@pytest.mark.every_backend
def test_logs_show_loss_penalty_and_grad_norm_in_fit_and_evaluate():
    base = linear_classifier()
    x, y = batch(n=16)
    model = _compile(kg.GradRegModel.from_model(base, penalty_weight=0.5, estimator="double_backprop", attack_norm="l2"),
                     lr=0.0, metrics=["accuracy"])
    history = model.fit(x, y, batch_size=4, epochs=1, validation_data=(x, y), verbose=0)
    assert {"loss", "penalty", "grad_norm", "accuracy", "val_loss", "val_penalty",
            "val_grad_norm", "val_accuracy"} <= set(history.history)
    results = model.evaluate(x, y, batch_size=5, return_dict=True, verbose=0)
    from helpers import linear_input_gradient
    from helpers import softmax
    w, b = base.get_weights()
    g = linear_input_gradient(base, x.astype("float64"), y)
    ce = -np.log(softmax(x @ w + b)[np.arange(len(y)), y])
    norms = np.linalg.norm(g, axis=1)
    np.testing.assert_allclose(results["grad_norm"], norms.mean(), rtol=1e-5)
    np.testing.assert_allclose(results["penalty"], (norms**2).mean(), rtol=1e-5)
    np.testing.assert_allclose(results["loss"], ce.mean() + 0.25 * (norms**2).mean(), rtol=1e-5)
    # with lr = 0, validation during fit saw the same model
    np.testing.assert_allclose(history.history["val_loss"][0], results["loss"], rtol=1e-5)


@pytest.mark.every_backend
def test_sample_weight_scales_the_penalty_like_the_loss():
    x, y = batch(n=8)
    doubled_weight = _compile(kg.GradRegModel.from_model(linear_classifier(), penalty_weight=1.0, attack_norm="l2"), lr=0.1)
    doubled_lr = _compile(kg.GradRegModel.from_model(linear_classifier(), penalty_weight=1.0, attack_norm="l2"), lr=0.2)
    doubled_weight.fit(x, y, sample_weight=np.full(8, 2.0), batch_size=4, shuffle=False, verbose=0)
    doubled_lr.fit(x, y, batch_size=4, shuffle=False, verbose=0)
    weights_close(doubled_weight, doubled_lr, rtol=1e-5)


def _subclassed():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    return Net()


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_from_model_wraps_and_shares_weights(kind):
    x, y = batch()
    if kind == "sequential":
        base = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    elif kind == "functional":
        base = linear_classifier()
    else:
        base = _subclassed()
    model = kg.GradRegModel.from_model(base, input_shape=(5,), penalty_weight=1.0, attack_norm="l2")
    np.testing.assert_allclose(model.predict(x, verbose=0), base.predict(x, verbose=0), rtol=1e-6)
    _compile(model).fit(x, y, verbose=0)
    np.testing.assert_allclose(model.predict(x, verbose=0), base.predict(x, verbose=0), rtol=1e-6)


def test_from_model_reports_bad_arguments_as_such():
    with pytest.raises(ValueError, match="penalty_weight=-1"):
        kg.GradRegModel.from_model(linear_classifier(), penalty_weight=-1.0, attack_norm="l2")


def test_from_model_needs_input_shape_for_an_unbuilt_subclassed_model():
    with pytest.raises(ValueError, match="input_shape="):
        kg.GradRegModel.from_model(_subclassed(), attack_norm="l2")


@pytest.mark.parametrize("variant", VARIANTS + [dict(penalty_every=2), dict(penalty_weight=0.0),
                                                dict(UNSQUARED[0], difference="central"),
                                                dict(penalty_warmup=3, attack_norm="l2")],
                         ids=lambda v: "-".join(map(str, v.values())))
def test_model_round_trips_and_trains_with_and_without_xla(variant, tmp_path):
    settings = dict(penalty_weight=0.3, h=0.02)
    settings.update(variant)
    # XLA for one variant of each kind of step (the XLA exactness test covers more)
    with_xla = variant.get("difference") == "central" or "penalty_every" in variant
    run_model_test(lambda: kg.GradRegModel.from_model(small_cnn(), **settings),
                   *batch(n=8, shape=(6, 6, 2)), tmp_path,
                   ("penalty_weight", "h", "attack_norm", "difference", "estimator", "penalty_every",
                    "penalty_power", "epsilon", "clean_weight", "penalty_warmup"),
                   jit_compile=(False, True) if with_xla else (False,))


@pytest.mark.every_backend
@pytest.mark.skipif(not kg.backend.current().COMPILES_STEPS, reason="steps run eagerly here")
@pytest.mark.parametrize("penalty_every", [1, 2])
def test_jit_compiled_fit_gives_the_same_weights(penalty_every):
    """In float64, so that XLA's reordering of float32 rounding does not hide a real change.

    Without BatchNorm on JAX: Keras' JAX BatchNormalization rounds through float32 (a
    plain keras.Model differs by 4e-8 with and without jit there), which the finite
    difference's 1/h magnifies."""
    x, y = batch(n=8, shape=(6, 6, 2), dtype="float64")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    models = []
    for jit in (False, True):
        base = small_cnn(batchnorm=keras.backend.backend() == "tensorflow", dtype="float64")
        model = kg.GradRegModel.from_model(base, penalty_weight=1.0, attack_norm="linf",
                                           penalty_every=penalty_every)
        _compile(model, loss=CE64, jit_compile=jit).fit(data, epochs=2, verbose=0)
        models.append(model)
    weights_close(*models, rtol=1e-9, atol=1e-12)


# Not in the JAX pass: with float64 on there (jax_enable_x64), Keras' own losses return
# float64 for float32 logits.
@pytest.mark.parametrize("policy,rtol", [("mixed_float16", 0.1), ("mixed_bfloat16", 0.3)])
def test_mixed_precision_computes_the_difference_in_float32(policy, rtol):
    """The losses and their difference are float32; what error remains comes from the
    model's own half-precision activations (bfloat16 keeps 8 significant bits)."""
    x, y = batch(n=8, shape=(6, 6, 2))
    reference = small_cnn()
    _, expected = kg.input_gradient_penalty(reference, x, y, CE, h=0.1, training=False, attack_norm="l2")
    keras.mixed_precision.set_global_policy(policy)
    model = small_cnn()
    model.set_weights(reference.get_weights())
    assert model.layers[-1].compute_dtype != "float32"
    loss, penalty = kg.input_gradient_penalty(model, x, y, CE, h=0.1, training=False, attack_norm="l2")
    assert {keras.backend.standardize_dtype(t.dtype) for t in (loss, penalty)} == {"float32"}
    np.testing.assert_allclose(np.asarray(penalty), np.asarray(expected), rtol=rtol)
    gradreg = _compile(kg.GradRegModel.from_model(model, penalty_weight=1.0, attack_norm="l2"))
    history = gradreg.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["penalty"][0] > 0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(penalty_weight=-0.1), "penalty_weight=-0.1"),
        (dict(penalty_weight=float("inf")), "penalty_weight=inf"),
        (dict(penalty_weight=float("nan")), "penalty_weight=nan"),
        (dict(h=float("nan")), "h=nan"),
        (dict(h=0), "h=0"),
        (dict(attack_norm="L2"), "attack_norm='L2'"),
        (dict(difference="centered"), "difference='centered'"),
        (dict(penalty_every=0), "penalty_every=0"),
        (dict(penalty_every=2.0), "penalty_every=2.0"),
        (dict(penalty_every=True), "penalty_every=True"),
        (dict(penalty_power=3), "penalty_power=3"),
        (dict(penalty_power="1"), "penalty_power='1'"),
        (dict(penalty_power=1), "penalty_power=1 .*pass epsilon"),
        (dict(penalty_power=1, epsilon=-0.1), "epsilon=-0.1"),
        (dict(epsilon=0.1), "epsilon=0.1 scales the unsquared penalty"),
        (dict(clean_weight=0.0), "clean_weight=0.0"),
        (dict(clean_weight=1.5), r"clean_weight=1.5 must be a finite number in \(0, 1\]"),
        (dict(penalty_warmup=-1), "penalty_warmup=-1"),
        (dict(penalty_warmup=2.5), "penalty_warmup=2.5"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, match):
    inputs = keras.Input((5,))
    with pytest.raises(ValueError, match=match):
        kg.GradRegModel(inputs, keras.layers.Dense(3)(inputs), **kwargs)


def test_integer_model_input_is_rejected_at_construction():
    inputs = keras.Input((4,), dtype="int32")
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Embedding(10, 3)(inputs)))
    with pytest.raises(ValueError, match="int32.*must be float"):
        kg.GradRegModel(inputs, outputs, attack_norm="l2")


def _two_headed(dtype="float64"):
    """Two linear heads on one input: logits x W1 + b1 and x W2 + b2."""
    first, second = linear_classifier(dtype=dtype, seed=0), linear_classifier(dtype=dtype, seed=1)
    inputs = keras.Input((5,), dtype=dtype)
    return keras.Model(inputs, [first(inputs), second(inputs)])


@pytest.mark.every_backend
@pytest.mark.parametrize("one_loss,loss_weights", [(True, None), (False, None), (False, [1.0, 0.5])])
def test_multi_output_model_penalises_the_weighted_sum_of_its_losses(one_loss, loss_weights):
    """One SGD step equals an independent double-backprop computation of the objective
    mean(L) + lambda / 2 * mean(||grad_x L||^2), L = sum_i w_i CE_i."""
    base = _two_headed()
    x, y = batch(dtype="float64")
    y2 = (y + 1) % 3
    weights = loss_weights or [1.0, 1.0]
    variables = [tf.Variable(w) for w in base.get_weights()]

    def per_example(inputs):
        logits = [inputs @ variables[0] + variables[1], inputs @ variables[2] + variables[3]]
        return sum(w * tf.nn.sparse_softmax_cross_entropy_with_logits(t, z)
                   for w, t, z in zip(weights, (y, y2), logits))

    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        with tf.GradientTape() as inner:
            inner.watch(xt)
            total = per_example(xt)
        g = inner.gradient(total, xt)
        objective = tf.reduce_mean(total) + 1.0 / 2 * tf.reduce_mean(tf.reduce_sum(g**2, axis=1))
    expected = [v.numpy() - 0.5 * d.numpy() for v, d in zip(variables, tape.gradient(objective, variables))]
    model = kg.GradRegModel.from_model(base, penalty_weight=1.0, estimator="double_backprop", attack_norm="l2")
    _compile(model, lr=0.5, loss=CE64 if one_loss else [CE64, CE64], loss_weights=loss_weights)
    model.fit(tf.data.Dataset.from_tensors((x, (y, y2))), epochs=1, verbose=0)
    for got, want in zip(model.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-9)


def test_dict_of_losses_maps_to_the_outputs_by_name():
    inputs = keras.Input((5,))
    a = keras.layers.Dense(3, name="a")(inputs)
    b = keras.layers.Dense(3, name="b")(inputs)
    model = kg.GradRegModel(inputs, {"a": a, "b": b}, penalty_weight=1.0, attack_norm="l2")
    x, y = batch()
    _compile(model, loss={"a": CE, "b": CE}, loss_weights={"a": 1.0, "b": 0.0})
    history = model.fit(x, {"a": y, "b": y}, verbose=0).history
    assert np.isfinite(history["loss"][0]) and history["penalty"][0] > 0


@pytest.mark.every_backend
def test_more_losses_than_outputs_is_named_before_training():
    model = kg.GradRegModel.from_model(linear_classifier(), attack_norm="l2")
    model.compile("sgd", loss=[CE, CE])
    before = model.get_weights()
    with pytest.raises(ValueError, match="1 output.*2 loss"):
        model.fit(*batch(), verbose=0)
    _weights_close_arrays(before, model.get_weights())


@pytest.mark.every_backend
def test_fit_without_labels_is_a_clear_error():
    model = _compile(kg.GradRegModel.from_model(linear_classifier(), attack_norm="l2"))
    with pytest.raises(ValueError, match="needs targets"):
        model.fit(batch()[0], verbose=0)


def _weights_close_arrays(a, b):
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def _log_model():
    inputs = keras.Input((1,))
    return kg.GradRegModel(inputs, keras.layers.Dense(2)(keras.layers.Lambda(keras.ops.log)(inputs)),
                           h=1.0, difference="central", attack_norm="l2")


@pytest.mark.every_backend
@pytest.mark.parametrize("jit_compile", [False, True])
def test_nonfinite_penalty_updates_nothing_and_stops_fit_with_and_without_xla(jit_compile):
    """Under XLA a check_numerics would be dropped: the skip is in the step itself."""
    model = _log_model()
    model.compile(keras.optimizers.Adam(0.1), CE, jit_compile=jit_compile)
    good, bad = np.array([[2.0], [3.0]], "float32"), np.array([[0.5], [0.7]], "float32")
    y = np.array([0, 1])
    data = tf.data.Dataset.from_tensor_slices((np.concatenate([good, bad]), np.tile(y, 2))).batch(2)
    reference = _log_model()
    reference.set_weights(model.get_weights())
    reference.compile(keras.optimizers.Adam(0.1), CE, jit_compile=jit_compile)
    reference.fit(good, y, verbose=0)  # the first, finite batch only
    with pytest.raises(FloatingPointError, match="training batch 1 of epoch 0.*NaN or Inf"):
        model.fit(data, verbose=0)  # x - h d < 0 in the second batch: log is NaN
    weights_close(model, reference, rtol=0, atol=0)
    assert int(model.optimizer.iterations) == 1  # the skipped step left Adam alone


@pytest.mark.every_backend
@pytest.mark.parametrize("jit_compile", [False, True])
def test_nonfinite_inputs_are_refused_naming_the_batch(jit_compile):
    x, y = batch(n=8)
    x[5, 2] = np.nan
    model = _compile(kg.GradRegModel.from_model(linear_classifier(), attack_norm="l2"), jit_compile=jit_compile)
    before = model.get_weights()
    with pytest.raises(FloatingPointError, match="training batch 1 of epoch 0"):
        model.fit(x, y, batch_size=4, shuffle=False, verbose=0)
    assert not np.array_equal(before[0], model.get_weights()[0])  # batch 0 trained
    assert np.all(np.isfinite(model.get_weights()[0]))
    with pytest.raises(FloatingPointError, match="evaluation batch 1"):
        model.evaluate(x, y, batch_size=4, verbose=0)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="train_step(data) is TensorFlow's contract; JAX's takes (state, data)")
def test_a_custom_loop_gets_the_skip_and_the_count():
    model = _compile(kg.GradRegModel.from_model(linear_classifier(), attack_norm="l2"))
    x, y = batch()
    x[0, 0] = np.inf
    before = model.get_weights()
    logs = model.train_step((tf.constant(x), tf.constant(y)))
    assert float(logs["skipped_steps"]) == 1.0
    _weights_close_arrays(before, model.get_weights())


def test_zero_penalty_weight_takes_no_input_gradient(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the penalty was computed")

    monkeypatch.setattr(kg.backend, "clean_pass", refuse)
    model = _compile(kg.GradRegModel.from_model(linear_classifier(), penalty_weight=0.0, attack_norm="l2"))
    history = model.fit(*batch(), verbose=0).history
    assert "penalty" not in history and "grad_norm" not in history and "loss" in history


@pytest.mark.every_backend
def test_logged_penalty_is_the_term_the_objective_uses_with_sample_weights():
    """loss = compiled loss + lambda / 2 * penalty, each a batch mean of weighted values."""
    base = linear_classifier()
    x, y = batch(n=8)
    w = np.linspace(0.0, 2.0, 8).astype("float32")
    loss, penalty = (keras.ops.convert_to_numpy(t) for t in kg.input_gradient_penalty(
        base, x, y, CE, attack_norm="l2"))
    model = _compile(kg.GradRegModel.from_model(base, penalty_weight=3.0, attack_norm="l2"), lr=0.0)
    history = model.fit(x, y, sample_weight=w, batch_size=8, verbose=0).history
    np.testing.assert_allclose(history["penalty"][0], np.mean(w * penalty), rtol=1e-5)
    np.testing.assert_allclose(history["loss"][0], np.mean(w * loss) + 1.5 * np.mean(w * penalty),
                               rtol=1e-5)


def test_the_old_norm_argument_fails_loudly_and_old_files_still_load(tmp_path):
    inputs = keras.Input((5,))
    with pytest.raises(TypeError, match="norm='l1' is now attack_norm='linf'"):
        kg.GradRegModel(inputs, keras.layers.Dense(3)(inputs), norm="l1", attack_norm="l2")
    model = kg.GradRegModel.from_model(linear_classifier(), attack_norm="linf")
    config = model.get_config()
    del config["attack_norm"]
    config["norm"] = "l1"  # as saved before the rename: the penalised dual norm
    assert kg.GradRegModel.from_config(config).attack_norm == "linf"


def test_numpy_scalars_are_valid_arguments(tmp_path):
    model = kg.GradRegModel.from_model(linear_classifier(), penalty_weight=np.float32(0.5),
                                       h=np.float64(0.01), penalty_every=np.int64(2), attack_norm="l2")
    assert (model.penalty_weight, model.penalty_every) == (0.5, 2)
    _compile(model).fit(*batch(), verbose=0)
    model.save(tmp_path / "m.keras")
    assert keras.models.load_model(tmp_path / "m.keras").penalty_every == 2


def test_tensorboard_receives_the_penalty(tmp_path):
    model = _compile(kg.GradRegModel.from_model(linear_classifier(), attack_norm="l2"))
    model.fit(*batch(), epochs=1, verbose=0, callbacks=[keras.callbacks.TensorBoard(str(tmp_path))])
    tags = set()
    for root, _, files in os.walk(tmp_path / "train"):
        for name in files:
            for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                tags.update(v.tag for v in event.summary.value)
    assert {"epoch_penalty", "epoch_grad_norm", "epoch_loss"} <= tags


@pytest.mark.parametrize("jit_compile,expected", [(True, {True, False}), (False, {None})])
def test_tf_lazy_fit_under_xla_traces_the_two_steps_apart(jit_compile, expected, monkeypatch):
    """Under XLA the lazy step's tf.cond ran 8.5x a plain step (small CNN, this CPU), so
    fit compiles the penalised and the plain step apart; without XLA the cond stays."""
    from keras_gradreg.backend import tensorflow as tf_backend

    seen = []
    original = tf_backend.train_step

    def recording(model, data, penalised=None):
        seen.append(penalised)  # at trace time
        return original(model, data, penalised)

    monkeypatch.setattr(tf_backend, "train_step", recording)
    x, y = batch(n=8, shape=(6, 6, 2))
    model = _compile(kg.GradRegModel.from_model(small_cnn(), penalty_weight=1.0, penalty_every=2, attack_norm="l2"),
                     jit_compile=jit_compile)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert set(seen) == expected
