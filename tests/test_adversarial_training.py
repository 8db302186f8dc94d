"""The adversarial-training baselines: their examples in closed form, free training's
replays against an independent computation, the overfitting monitor, Keras conventions."""


import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gradreg as kg
from helpers import batch, linear_classifier, run_model_test, small_cnn

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

def test_adversarial_training_examples_stay_within_epsilon_and_range():
    base = kg.architectures.small_cnn((28, 28, 1), 10)
    model = kg.AdversarialTrainingModel.from_model(base, epsilon=0.1)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    (x, y), _ = kg.load_offline_mnist()
    x_adv = model.adversarial_examples(x[:32], y[:32]).numpy()
    assert np.abs(x_adv - x[:32]).max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert float(loss(y[:32], base(x_adv))) > float(loss(y[:32], base(x[:32])))


def test_pgd_on_a_binary_linear_classifier_ends_at_the_worst_corner_of_the_ball():
    """The cross-entropy's input gradient has the sign of w_other - w_y everywhere, so
    enough steps from any start reach x + eps sign(w_other - w_y), clipped to the range."""
    model = linear_classifier(num_classes=2)
    x, y = batch(n=16, num_classes=2)
    x_adv = kg.adversarial_training.perturb(
        model, CE.call, tf.constant(x), tf.constant(y), 0.1, steps=10, step_size=0.25,
        seed=tf.constant([3, 4], tf.int64), clip_min=0.0, clip_max=1.0).numpy()
    w = model.get_weights()[0]
    corner = np.clip(x + 0.1 * np.sign(w[:, 1 - y] - w[:, y]).T, 0, 1)
    np.testing.assert_allclose(x_adv, corner, atol=1e-6)


def test_fast_at_takes_one_step_of_1_25_eps_from_a_random_start_drawn_by_step_and_seed():
    base = linear_classifier(num_classes=2)
    model = kg.AdversarialTrainingModel.from_model(base, epsilon=0.1, steps=1,
                                                   step_size=kg.adversarial_training.FGSM_STEP)
    model.compile("sgd", CE)
    model.optimizer.build(model.trainable_variables)
    x, y = batch(n=64, num_classes=2)
    first = model.adversarial_examples(x, y).numpy()
    np.testing.assert_array_equal(model.adversarial_examples(x, y).numpy(), first)  # same step
    model.optimizer.iterations.assign(1)
    assert not np.allclose(model.adversarial_examples(x, y).numpy(), first)  # the next step
    w = base.get_weights()[0]
    direction = np.sign(w[:, 1 - y] - w[:, y]).T
    moved = (first - x) * direction  # along the ascent: 1.25 eps from a start in [-eps, eps]
    assert np.abs(first - x).max() <= 0.1 + 1e-6
    inside = (x > 0.1) & (x < 0.9)
    # start s in [-eps, eps], then min(s + 1.25 eps, eps): in [eps / 4, eps], eps for s >= -eps / 4
    assert moved[inside].min() >= 0.025 - 1e-6
    assert 0.5 < np.mean(np.isclose(moved[inside], 0.1, atol=1e-6)) < 0.75


def test_model_round_trips_and_trains_with_and_without_xla(tmp_path):
    x, y = batch(n=8, shape=(6, 6, 2))
    model = run_model_test(
        lambda: kg.AdversarialTrainingModel.from_model(small_cnn(), epsilon=0.1, steps=2, seed=5),
        x, y, tmp_path, ("epsilon", "steps", "step_size", "clip_min", "clip_max", "seed"))
    assert float(model.current_epsilon.numpy()) == pytest.approx(0.1)


def test_free_model_round_trips_and_trains_with_and_without_xla(tmp_path):
    x, y = batch(n=8, shape=(6, 6, 2))
    run_model_test(lambda: kg.FreeAdversarialTrainingModel.from_model(small_cnn(), epsilon=0.1,
                                                                       replays=2),
                   x, y, tmp_path, ("epsilon", "replays", "clip_min", "clip_max", "seed"))


def test_free_training_replays_a_batch_with_the_perturbation_its_backward_pass_gave():
    """m = 2: update 1 is a plain step on x; its input gradient g sets delta = eps sign(g);
    update 2 is a plain step on clip(x + delta) with the new weights."""
    x, y = batch(n=8)
    base = linear_classifier()
    model = kg.FreeAdversarialTrainingModel.from_model(base, epsilon=0.05, replays=2)
    model.compile(keras.optimizers.SGD(0.5), CE)
    reference = linear_classifier()
    reference.compile(keras.optimizers.SGD(0.5), CE)
    with tf.GradientTape() as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        loss = CE(y, reference(xt))
    delta = 0.05 * np.sign(tape.gradient(loss, xt).numpy())
    reference.train_on_batch(x, y)
    reference.train_on_batch(np.clip(x + delta, 0, 1), y)
    model.fit(x, y, batch_size=8, verbose=0)
    for got, want in zip(base.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert int(model.optimizer.iterations) == 2  # one train_step, m updates


def test_free_training_with_one_replay_is_plain_training():
    x, y = batch(n=8)
    base = linear_classifier()
    model = kg.FreeAdversarialTrainingModel.from_model(base, epsilon=0.3, replays=1)
    plain = linear_classifier()
    for m in (model, plain):
        m.compile(keras.optimizers.SGD(0.5), CE)
        m.fit(x, y, batch_size=4, shuffle=False, epochs=2, verbose=0)
    for got, want in zip(base.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_the_monitor_logs_held_out_accuracies_and_flags_catastrophic_overfitting(monkeypatch):
    model = linear_classifier()
    model.compile("sgd", CE)
    x, y = batch(n=32)
    monitor = kg.adversarial_training.RobustnessMonitor(x, y, epsilon=0.1)
    monitor.set_model(model)
    logs = {}
    monitor.on_epoch_end(0, logs)
    assert set(logs) == {"pgd_accuracy", "fgsm_accuracy", "catastrophic_overfitting"}
    assert 0 <= logs["pgd_accuracy"] <= logs["fgsm_accuracy"] + 1e-9 <= 1 + 1e-9
    # PGD accuracy 0.6, 0.5, then 0.1 while FGSM accuracy rises: the run collapsed at epoch 2
    seen = iter([0.6, 0.5, 0.5, 0.55, 0.1, 0.9, 0.1, 0.9])
    monkeypatch.setattr(monitor, "_accuracy", lambda steps, step_size: next(seen))
    monitor.best = (0.0, 0.0)
    flags = []
    with pytest.warns(UserWarning, match="Catastrophic overfitting at epoch 2"):
        for epoch in range(4):
            logs = {}
            monitor.on_epoch_end(epoch, logs)
            flags.append(logs["catastrophic_overfitting"])
    assert flags == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("kwargs,match", [(dict(epsilon=0.0), "epsilon=0.0"),
                                          (dict(epsilon=float("nan")), "epsilon=nan"),
                                          (dict(epsilon=2.0), "epsilon=2.0"),
                                          (dict(steps=0), "steps=0"),
                                          (dict(step_size=-1.0), "step_size=-1.0"),
                                          (dict(seed=1.5), "seed=1.5"),
                                          (dict(clip_min=1.0, clip_max=0.0), "clip_max=0.0")])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kg.AdversarialTrainingModel.from_model(small_cnn(), **kwargs)


def test_bad_free_arguments_are_named():
    with pytest.raises(ValueError, match="replays=0"):
        kg.FreeAdversarialTrainingModel.from_model(small_cnn(), replays=0)


def test_epsilon_ramp_reaches_full_strength():
    model = kg.AdversarialTrainingModel.from_model(small_cnn(), epsilon=0.2)
    ramp = kg.EpsilonRamp(epochs=2)
    ramp.set_model(model)
    radii = []
    for epoch in range(3):
        ramp.on_epoch_begin(epoch)
        radii.append(float(model.current_epsilon.numpy()))
    np.testing.assert_allclose(radii, [0.1, 0.2, 0.2], rtol=1e-6)
