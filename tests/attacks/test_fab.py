"""FAB-T against closed forms: its distances, its boundary step, its padded batches."""

import keras
import numpy as np
import pytest

from helpers import attack_fn
from helpers import broken_by
from helpers import linear_distance
from helpers import linear_image_problem
import keras_gradreg as kg


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("classes", [2, 4])
@pytest.mark.every_backend
def test_fab_distances_are_within_a_few_percent_of_the_closed_form_and_never_below(norm, classes):
    model, x, y, w, logits = linear_image_problem(classes, seed=1)
    true = linear_distance(w, logits, y, norm)
    broken, size = broken_by(model, x, y, "fab_t", norm, np.full(len(x), np.inf))
    assert broken.all()
    assert np.all(size >= true * (1 - 1e-4))
    np.testing.assert_allclose(size, true, rtol=0.03)


def test_fab_treats_each_image_on_its_own_so_padding_its_batches_changes_nothing():
    """make_attack pads FAB's batches (fab.BATCH_MULTIPLE) by repeating an image:
    an image's example must not depend on the others in its batch."""
    model, x, y, _, _ = linear_image_problem(4, seed=2, n=37)
    together = np.asarray(attack_fn(model, x, "fab_t", "linf")(x, y, np.full(37, np.inf, np.float32)))
    alone = np.asarray(attack_fn(model, x, "fab_t", "linf")(x[:5], y[:5], np.full(5, np.inf, np.float32)))
    np.testing.assert_allclose(alone, together[:5], atol=1e-6)


@pytest.mark.every_backend
def test_fab_boundary_step_is_the_closed_form_projection():
    """Without the box binding: l2 moves along w by c / ||w||^2, l_inf by c / ||w||_1 signs."""
    w = keras.ops.convert_to_tensor([[3.0, -4.0], [1.0, 1.0]])
    c = keras.ops.convert_to_tensor([10.0, -1.0])
    box = keras.ops.full((2, 2), 100.0)
    d2 = kg.attacks.fab._boundary_step(w, c, -box, box, "l2", iterations=60)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(d2), [[1.2, -1.6], [0.0, 0.0]], atol=1e-4)
    dinf = kg.attacks.fab._boundary_step(w, c, -box, box, "linf", iterations=60)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(dinf), [[10 / 7, -10 / 7], [0.0, 0.0]], atol=1e-4)
    # a box that binds one coordinate: the other takes up the rest
    tight = keras.ops.convert_to_tensor([[0.5, 100.0], [100.0, 100.0]])
    d = kg.attacks.fab._boundary_step(w, c, -100.0 * keras.ops.ones((2, 2)), tight, "linf", iterations=60)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(d)[0], [0.5, -(10 - 1.5) / 4], atol=1e-4)
