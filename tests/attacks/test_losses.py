"""The attacks' losses: DLR's invariances, and what a saturated softmax does to each."""

import numpy as np
import pytest
import keras

from helpers import attack_fn
from helpers import broken_by
from helpers import linear_distance
from helpers import linear_image_problem
import keras_gradreg as kg

pytestmark = pytest.mark.every_backend


def test_dlr_is_invariant_to_shifting_and_positive_scaling_of_the_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(32, 10)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    targets = (y + rng.integers(1, 10, 32)) % 10
    shifted = 7.0 * logits - 3.0 + rng.normal(size=(32, 1)).astype(np.float32)
    dlr = lambda *args: keras.ops.convert_to_numpy(kg.dlr_loss(*args))
    for t in (None, targets):
        a, b = dlr(logits, y, t), dlr(shifted, y, t)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        assert np.ptp(a) > 0.1  # not a constant
    # untargeted DLR is positive exactly when misclassified
    np.testing.assert_array_equal(dlr(logits, y) > 0, logits.argmax(1) != y)


def test_saturated_softmax_defeats_cross_entropy_attacks_but_not_dlr_margin_or_square():
    """Logits x 1e4: the cross-entropy's gradient underflows to zero, DLR's does not.
    CleverHans' MIM ascends the cross-entropy too; our FGM/PGD ascend the logit margin."""
    model, x, y, w, logits = linear_image_problem(5, seed=2, side=6, scale=1e4)
    epsilon = 1.5 * linear_distance(w, logits, y, "linf")
    ce, _ = broken_by(model, x, y, "apgd_ce", "linf", epsilon)
    pgd = attack_fn(model, x, "pgd", "linf")(x, y, epsilon)
    fooled = lambda x_adv: np.mean(np.argmax(model.predict(np.asarray(x_adv), verbose=0), 1) != y)
    if keras.backend.backend() != "jax":  # JAX's (in this suite's x64 mode) does not underflow
        assert ce.mean() <= 0.25
    if keras.backend.backend() == "tensorflow":  # CleverHans: TensorFlow only
        assert fooled(attack_fn(model, x, "mim", "linf")(x, y, epsilon)) <= 0.25
    assert broken_by(model, x, y, "apgd_t", "linf", epsilon)[0].all()
    assert broken_by(model, x, y, "square", "linf", epsilon)[0].mean() >= 0.75
    assert fooled(pgd) >= 0.75


def test_the_top_k_margin_is_the_kth_other_logit_above_the_label():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(64, 6)).astype(np.float32)
    y = rng.integers(0, 6, 64)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kg.attacks.losses.margin(logits, y, 1)),
                               keras.ops.convert_to_numpy(kg.attacks.losses.margin(logits, y)), rtol=0)
    for k in (1, 2, 5):
        others = np.where(np.arange(6) == y[:, None], -np.inf, logits)
        expected = -np.sort(-others, axis=1)[:, k - 1] - logits[np.arange(64), y]
        margin = keras.ops.convert_to_numpy(kg.attacks.losses.margin(logits, y, k))
        np.testing.assert_allclose(margin, expected, rtol=1e-6)
        fooled = keras.ops.convert_to_numpy(kg.attacks.judge.fooled(logits, y, k))
        np.testing.assert_array_equal(margin > 0, fooled)
