"""Free adversarial training on the SteppedModel contract: its replays against an
independent computation, on both backends; one replay is plain training; Keras conventions;
the same weights on two replicas."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import batch
from helpers import linear_classifier
from helpers import run_model_test
from helpers import small_cnn
import keras_gradreg as kg

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
CE64 = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")


def test_model_round_trips_and_trains_with_and_without_xla(tmp_path):
    x, y = batch(n=8, shape=(6, 6, 2))
    run_model_test(lambda: kg.FreeAdversarialTrainingModel.from_model(small_cnn(), epsilon=0.1,
                                                                       replays=2),
                   x, y, tmp_path, ("epsilon", "replays", "attack_norm", "clip_min", "clip_max",
                                    "seed"))


def _replays_numpy(w, b, x, y, epsilon, lr, attack_norm):
    """m = 2 written out: update 1 on x; its input gradient g makes delta (epsilon sign(g), or
    epsilon g / ||g|| in l2); update 2 on clip(x + delta) with the new weights."""
    onehot = np.eye(w.shape[1])[y]

    def gradients(w, b, inputs):
        p = np.exp(inputs @ w + b)
        p /= p.sum(1, keepdims=True)
        error = (p - onehot) / len(y)
        return inputs.T @ error, error.sum(0), error @ w.T * len(y)

    gw, gb, gx = gradients(w, b, x)
    direction = (np.sign(gx) if attack_norm == "linf"
                 else gx / np.linalg.norm(gx, axis=1, keepdims=True))
    delta = epsilon * direction
    w, b = w - lr * gw, b - lr * gb
    gw, gb, _ = gradients(w, b, np.clip(x + delta, 0, 1))
    return w - lr * gw, b - lr * gb


@pytest.mark.every_backend
@pytest.mark.parametrize("attack_norm", ["linf", "l2"])
def test_each_replay_trains_on_the_perturbation_the_last_replays_backward_pass_gave(attack_norm):
    x, y = batch(n=8, dtype="float64")
    base = linear_classifier(dtype="float64")
    w, b = base.get_weights()
    model = kg.FreeAdversarialTrainingModel.from_model(base, epsilon=0.05, replays=2,
                                                       attack_norm=attack_norm)
    model.compile(keras.optimizers.SGD(0.5), CE64)
    model.fit(tf.data.Dataset.from_tensors((x, y)), verbose=0)
    epsilon = float(keras.ops.convert_to_numpy(model.current_epsilon))  # as it computes with it
    for got, want in zip(base.get_weights(), _replays_numpy(w, b, x, y, epsilon, 0.5, attack_norm)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 2  # one step, m updates


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


def test_a_nonfinite_batch_updates_nothing_and_stops_fit():
    x, y = batch(n=8)
    x[3, 0] = np.nan
    base = linear_classifier()
    before = [w.copy() for w in base.get_weights()]
    model = kg.FreeAdversarialTrainingModel.from_model(base, epsilon=0.1, replays=3)
    model.compile(keras.optimizers.SGD(0.5), CE)
    with pytest.raises(FloatingPointError, match="training batch 0"):
        model.fit(x, y, batch_size=8, verbose=0)
    for got, want in zip(base.get_weights(), before):
        np.testing.assert_array_equal(got, want)


def test_two_replicas_give_the_same_weights_as_one_device():
    x, y = batch(n=32, shape=(6, 6, 2), dtype="float64")
    weights = small_cnn("softplus", dtype="float64").get_weights()
    results = []
    for strategy in (tf.distribute.OneDeviceStrategy("CPU:0"),
                     tf.distribute.MirroredStrategy(
                         ["CPU:0", "CPU:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())):
        with strategy.scope():
            base = small_cnn("softplus", dtype="float64")
            base.set_weights(weights)
            model = kg.FreeAdversarialTrainingModel.from_model(base, epsilon=0.1, replays=2)
            model.compile(keras.optimizers.SGD(0.5, momentum=0.9), CE64)
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=2, verbose=0)
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)
    assert not np.allclose(results[0][0], weights[0])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="replays=0"):
        kg.FreeAdversarialTrainingModel.from_model(small_cnn(), replays=0)
    with pytest.raises(ValueError, match="attack_norm='l1'"):
        kg.FreeAdversarialTrainingModel.from_model(small_cnn(), attack_norm="l1")
