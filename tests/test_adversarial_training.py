"""The PGD adversarial-training baseline: its examples, and the model's Keras conventions."""

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from helpers import batch, run_model_test, small_cnn

def test_adversarial_training_examples_stay_within_epsilon_and_range():
    base = kg.models.small_cnn((28, 28, 1), 10)
    model = kg.AdversarialTrainingModel.from_model(base, epsilon=0.1)
    (x, y), _ = kg.load_offline_mnist()
    x_adv = model.adversarial_examples(x[:32], y[:32]).numpy()
    assert np.abs(x_adv - x[:32]).max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert float(loss(y[:32], base(x_adv))) > float(loss(y[:32], base(x[:32])))


def test_model_round_trips_and_trains_with_and_without_xla(tmp_path):
    x, y = batch(n=8, shape=(6, 6, 2))
    model = run_model_test(
        lambda: kg.AdversarialTrainingModel.from_model(small_cnn(), epsilon=0.1, steps=2),
        x, y, tmp_path, ("epsilon", "steps", "clip_min", "clip_max"),
        deterministic_step=False)  # CleverHans' PGD starts from TF's global random state
    assert float(model.current_epsilon.numpy()) == pytest.approx(0.1)


@pytest.mark.parametrize("kwargs,match", [(dict(epsilon=0.0), "epsilon=0.0"),
                                          (dict(epsilon=float("nan")), "epsilon=nan"),
                                          (dict(epsilon=2.0), "epsilon=2.0"),
                                          (dict(steps=0), "steps=0"),
                                          (dict(clip_min=1.0, clip_max=0.0), "clip_max=0.0")])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kg.AdversarialTrainingModel.from_model(small_cnn(), **kwargs)


def test_epsilon_ramp_reaches_full_strength():
    model = kg.AdversarialTrainingModel.from_model(small_cnn(), epsilon=0.2)
    ramp = kg.EpsilonRamp(epochs=2)
    ramp.set_model(model)
    radii = []
    for epoch in range(3):
        ramp.on_epoch_begin(epoch)
        radii.append(float(model.current_epsilon.numpy()))
    np.testing.assert_allclose(radii, [0.1, 0.2, 0.2], rtol=1e-6)
