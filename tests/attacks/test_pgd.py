"""PGD: its closed form on linear classifiers, its one-step cases, the step-size convention,
per-image radii, on both backends."""

import keras
import numpy as np
import pytest

from helpers import batch
from helpers import linear_classifier
from keras_gradreg.attacks import pgd

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _corner(model, x, y, epsilon):
    """The worst corner of a binary linear classifier's l_inf ball, within the range."""
    w = model.get_weights()[0]
    return np.clip(x + epsilon * np.sign(w[:, 1 - y] - w[:, y]).T, 0, 1)


@pytest.mark.every_backend
def test_pgd_on_a_binary_linear_classifier_ends_at_the_worst_corner_of_the_ball():
    """The cross-entropy's input gradient has the sign of w_other - w_y everywhere, so
    enough steps from any start reach x + epsilon sign(w_other - w_y), clipped to the range."""
    model = linear_classifier(num_classes=2)
    x, y = batch(n=16, num_classes=2)
    x_adv = pgd.pgd(model, CE.call, x, y, 0.1, steps=10, step_size=0.25,
                    seed=np.array([3, 4], np.int32))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(x_adv), _corner(model, x, y, 0.1),
                               atol=1e-6)


@pytest.mark.every_backend
def test_each_image_gets_its_own_radius():
    model = linear_classifier(num_classes=2)
    x, y = batch(n=16, num_classes=2)
    epsilon = np.linspace(0.02, 0.2, 16).astype("float32")
    x_adv = keras.ops.convert_to_numpy(pgd.pgd(model, CE.call, x, y, epsilon, steps=10,
                                               step_size=0.25, seed=np.array([0, 0], np.int32)))
    np.testing.assert_allclose(x_adv, _corner(model, x, y, epsilon[:, None]), atol=1e-6)


@pytest.mark.every_backend
def test_without_a_start_one_step_is_fgsm_and_unprojected_steps_leave_the_ball():
    model = linear_classifier(num_classes=2)
    x, y = batch(n=16, num_classes=2)
    seed = np.array([0, 0], np.int32)
    fgsm = pgd.pgd(model, CE.call, x, y, 0.1, steps=1, step_size=1.0, seed=seed, start=0.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fgsm), _corner(model, x, y, 0.1),
                               atol=1e-6)
    free = keras.ops.convert_to_numpy(pgd.pgd(model, CE.call, x, y, 0.1, steps=3, step_size=1.0,
                                              seed=seed, start=0.0, projected=False))
    inside = (x > 0.3) & (x < 0.7)  # not clipped by the range
    np.testing.assert_allclose(np.abs(free - x)[inside], 0.3, atol=1e-6)


def test_the_step_for_a_reach_is_the_reach_over_the_steps():
    assert pgd.step_for_reach(7, pgd.TRAINING_REACH) == pytest.approx(0.25)  # 2/255 at 8/255
    assert pgd.step_for_reach(10, pgd.MADRY_REACH) == pytest.approx(0.25)
    assert pgd.VARIANTS["fgsm_rs"].step_size == 1.25 and pgd.VARIANTS["n_fgsm"].start == 2.0



def test_its_graph_holds_the_model_once_whatever_the_steps():
    """The steps are a loop in the graph: 40 steps trace the model's gradient once, as 2
    do (unrolled, a ResNeXt's 40-step graph took 48 s to trace and compile on 2 cores)."""
    import tensorflow as tf

    model = linear_classifier(num_classes=2)
    x, y = batch(n=4, num_classes=2)

    def ops_in_graph(steps):
        attack = tf.function(lambda x, y: pgd.pgd(model, CE.call, x, y, 0.1, steps=steps,
                                                  step_size=0.25, seed=tf.constant([0, 0])))
        graph = attack.get_concrete_function(tf.constant(x), tf.constant(y)).graph
        return len(graph.as_graph_def().node) + sum(
            len(f.node_def) for f in graph.as_graph_def().library.function)

    assert ops_in_graph(40) == ops_in_graph(2)
