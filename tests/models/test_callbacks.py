"""The callbacks of adversarial training: the held-out monitor against a closed form, its
verdict of catastrophic overfitting, and the radius ramp."""

import keras
import numpy as np
import pytest

from helpers import batch
from helpers import linear_classifier
from helpers import small_cnn
import keras_gradreg as kg

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_the_monitor_logs_held_out_accuracies_and_flags_catastrophic_overfitting(monkeypatch):
    """On a binary linear classifier PGD reaches the worst corner of the ball, x + epsilon
    sign(w_other - w_y) within the range: its accuracy is that corner's."""
    model = linear_classifier(num_classes=2)
    model.compile("sgd", CE)
    x, y = batch(n=64, num_classes=2)
    monitor = kg.RobustnessMonitor(x, y, epsilon=0.1)
    monitor.set_model(model)
    logs = {}
    monitor.on_epoch_end(0, logs)
    assert set(logs) == {"pgd_accuracy", "fgsm_accuracy", "catastrophic_overfitting"}
    w, b = model.get_weights()
    corner = np.clip(x + 0.1 * np.sign(w[:, 1 - y] - w[:, y]).T, 0, 1)
    assert logs["pgd_accuracy"] == pytest.approx(np.mean(np.argmax(corner @ w + b, 1) == y))
    assert logs["pgd_accuracy"] <= logs["fgsm_accuracy"] < np.mean(np.argmax(x @ w + b, 1) == y)
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


def test_the_monitor_refuses_a_bad_radius_by_name():
    x, y = batch(n=4)
    with pytest.raises(ValueError, match="epsilon=1.5"):
        kg.RobustnessMonitor(x, y, epsilon=1.5)


@pytest.mark.every_backend
def test_epsilon_ramp_reaches_full_strength():
    model = kg.AdversarialTrainingModel.from_model(small_cnn(), epsilon=0.2)
    ramp = kg.EpsilonRamp(epochs=2)
    ramp.set_model(model)
    radii = []
    for epoch in range(3):
        ramp.on_epoch_begin(epoch)
        radii.append(float(keras.ops.convert_to_numpy(model.current_epsilon)))
    np.testing.assert_allclose(radii, [0.1, 0.2, 0.2], rtol=1e-6)
