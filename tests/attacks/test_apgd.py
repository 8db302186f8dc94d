"""APGD against closed forms on linear classifiers, and its shedding of fooled images."""

import keras
import numpy as np
import pytest

from helpers import broken_by
from helpers import linear_distance
from helpers import linear_image_problem
import keras_gradreg as kg


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("attack,classes", [("apgd_ce", 2), ("apgd_t", 4), ("apgd_t", 5)])
@pytest.mark.every_backend
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
@pytest.mark.every_backend
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
def test_each_image_runs_its_own_apgd_whatever_else_is_in_the_batch(norm, loss, targeted):
    """An image's example depends on its own start only: the same in the whole batch as
    in a third of it (what padding a batch and stopping once all are fooled rely on),
    and the loop stops early only when every image is fooled."""
    rng = np.random.default_rng(3)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(5)])
    x = rng.uniform(0.3, 0.7, size=(48, 4, 4, 1)).astype("float32")
    logits = model.predict(x, verbose=0)
    y = np.argmax(logits, 1)
    targets = kg.attacks.registry.runner_up_classes(logits, y, 1)[:, 0] if targeted else None
    epsilon = np.geomspace(0.005, 0.5, 48).astype("float32") * (1.0 if norm == "linf" else 4.0)
    rngs = [np.random.default_rng([0, i]) for i in range(48)]
    (start,) = kg.attacks.apgd.draw_start(rngs, x, None, norm)

    def run(part):
        return np.asarray(kg.attacks.apgd.apgd(
            lambda images: model(images, training=False), x[part], y[part], epsilon[part],
            start[part], attack_norm=norm, loss=loss, steps=30, clip_min=0.0, clip_max=1.0,
            targets=None if targets is None else targets[part]))

    whole = run(slice(None))
    fooled = np.argmax(model.predict(whole, verbose=0), 1) != y
    assert 12 <= fooled.sum() < 48  # some images fooled early, some run to the end
    for third in (slice(0, 16), slice(16, 32), slice(32, 48)):
        np.testing.assert_allclose(run(third), whole[third], atol=1e-6)
