"""APGD against closed forms on linear classifiers, and its shedding of fooled images."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import broken_by
from helpers import linear_distance
from helpers import linear_image_problem
import keras_gradreg as kg


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("attack,classes", [("apgd_ce", 2), ("apgd_t", 4), ("apgd_t", 5)])
def test_apgd_breaks_every_image_just_above_the_true_distance_and_none_below(norm, attack, classes):
    """Binary cross-entropy and the targeted DLR loss (every runner-up a target) are
    maximised in the ball at the nearest boundary point of a linear classifier."""
    model, x, y, w, logits = linear_image_problem(classes)
    true = linear_distance(w, logits, y, norm)
    assert np.all(true < 0.4)  # x is in [0.4, 0.6]: the boundary points lie inside [0, 1]
    above, _ = broken_by(model, x, y, attack, norm, true * 1.02)
    below, _ = broken_by(model, x, y, attack, norm, true * 0.98)
    assert above.all() and not below.any()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_untargeted_dlr_breaks_nothing_below_the_true_distance_and_most_above(norm):
    """Untargeted DLR can also rise by pushing the third logit down, so on 3 classes it
    need not reach the nearest boundary (hence APGD-T in AutoAttack); it never fakes one."""
    model, x, y, w, logits = linear_image_problem(3, n=32)
    true = linear_distance(w, logits, y, norm)
    above, _ = broken_by(model, x, y, "apgd_dlr", norm, true * 1.5)
    below, _ = broken_by(model, x, y, "apgd_dlr", norm, true * 0.98)
    assert above.mean() >= 0.6 and not below.any()


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss,targeted", [("ce", False), ("dlr", False), ("dlr", True)])
def test_apgd_returns_the_same_examples_when_fooled_images_leave_its_batch(
        norm, loss, targeted, monkeypatch):
    """APGD drops the images it fooled from its batch (apgd.RETIRE_SHARE): every
    image's run is its own, so each example equals that of a run keeping them all."""
    rng = np.random.default_rng(3)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(5)])
    x = rng.uniform(0.3, 0.7, size=(48, 4, 4, 1)).astype("float32")
    logits = model.predict(x, verbose=0)
    y = np.argmax(logits, 1)
    targets = kg.attacks.registry.runner_up_classes(logits, y, 1)[:, 0] if targeted else None
    epsilon = np.geomspace(0.005, 0.5, 48).astype("float32") * (1.0 if norm == "linf" else 4.0)
    smallest = tf.Variable(48)  # the smallest batch the model saw

    def model_fn(images):
        smallest.assign(tf.minimum(smallest, tf.shape(images)[0]))
        return model(images, training=False)

    def run():
        smallest.assign(48)
        x_adv = tf.function(lambda: kg.attacks.apgd.apgd(
            model_fn, tf.constant(x), tf.constant(y), tf.constant(epsilon), attack_norm=norm,
            loss=loss, steps=30, clip_min=0.0, clip_max=1.0,
            targets=None if targets is None else tf.constant(targets), seed=1))().numpy()
        return x_adv, int(smallest.numpy())

    retiring, shed_to = run()
    monkeypatch.setattr(kg.attacks.apgd, "RETIRE_SHARE", 2.0)  # never: every image runs on
    keeping, kept = run()
    fooled = np.argmax(model.predict(keeping, verbose=0), 1) != y
    assert 12 <= fooled.sum() < 48  # enough leave the batch, and some run to the end
    assert kept == 48 and shed_to <= 48 - 6  # the batch did shrink, by at least an eighth
    np.testing.assert_allclose(retiring, keeping, atol=1e-6)
