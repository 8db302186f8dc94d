"""The Square Attack: on linear classifiers, on a gradient-masking model, its margin."""

import keras
import numpy as np
import pytest

from helpers import broken_by
from helpers import linear_distance
from helpers import linear_image_problem
from helpers import quantised
import keras_gradreg as kg


@pytest.mark.parametrize("norm,factor", [("linf", 1.5), ("l2", 2.0)])
def test_square_breaks_a_gradient_masking_model_where_apgd_cannot(norm, factor):
    """Inputs rounded to 1/32: no gradient anywhere, but the decision still moves."""
    model, x, y, w, logits = linear_image_problem(4, seed=3, side=6)
    masked = quantised(model, 32)
    y = np.argmax(masked.predict(x, verbose=0), 1)
    epsilon = factor * linear_distance(w, logits, y, norm)
    gradient = [broken_by(masked, x, y, a, norm, epsilon)[0] for a in ("apgd_ce", "apgd_t")]
    assert max(g.mean() for g in gradient) <= 0.15  # only the random start can get lucky
    assert broken_by(masked, x, y, "square", norm, epsilon)[0].mean() >= 0.75


@pytest.mark.parametrize("norm,factor", [("linf", 1.2), ("l2", 2.5)])
@pytest.mark.every_backend
def test_square_breaks_a_linear_classifier_above_the_true_distance_and_nothing_below(norm, factor):
    """(Square-L2 searches smooth bumps, a poor prior for a random linear classifier: it
    needs a wider margin above the distance than on images.)"""
    model, x, y, w, logits = linear_image_problem(4, seed=3, side=6)
    true = linear_distance(w, logits, y, norm)
    assert broken_by(model, x, y, "square", norm, factor * true)[0].all()
    assert not broken_by(model, x, y, "square", norm, 0.98 * true)[0].any()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_keeps_only_answers_that_lower_the_margin(norm):
    """Query k's draws depend on k alone, so a run of more queries passes through the
    state of a shorter one: each image's margin never rises with the budget, and every
    image's falls within 100 queries (nothing breaks at half the distance, so every
    query runs)."""
    model, x, y, w, logits = linear_image_problem(4, seed=3, side=6)
    epsilon = 0.5 * linear_distance(w, logits, y, norm).astype(np.float32)
    margins = []
    for queries in (1, 2, 5, 20, 100):
        rngs = [np.random.default_rng([0, i]) for i in range(len(x))]
        draws = kg.attacks.square.draw(rngs, x, kg.AutoAttackBudget(square_queries=queries), norm)
        x_adv = keras.ops.convert_to_numpy(kg.attacks.square.square(
            lambda v: model(v, training=False), x, y, epsilon, *draws, attack_norm=norm,
            queries=queries, clip_min=0.0, clip_max=1.0))
        size = kg.attacks.ball.perturbation_size(x_adv, x, norm)
        assert np.all(kg.attacks.ball.within_epsilon(size, epsilon, norm, x.shape[1:], 0.0, 1.0))
        bias = logits - x.reshape(len(x), -1) @ w
        z = x_adv.reshape(len(x), -1).astype(np.float64) @ w + bias
        true = z[np.arange(len(x)), y]
        margins.append(true - np.max(np.where(np.eye(4, dtype=bool)[y], -np.inf, z), axis=1))
    margins = np.array(margins)
    assert np.all(margins > 0)
    assert np.all(np.diff(margins, axis=0) <= 1e-5)
    assert np.all(margins[-1] < margins[0] - 1e-3)
