"""The paper's protocol: closed-form distances, verified examples, clean errors, softmax
outputs, label shapes, top-k error and a trained CNN (its checks of the input:
tests/evaluation/test_inputs.py)."""

import dataclasses
import json

import keras
import numpy as np
import pytest

from helpers import FAST
from helpers import NORM_ATTACKS
from helpers import ONE_STEP
from helpers import evaluation_problem
from helpers import linear_distance
from helpers import linear_image_problem
from helpers import lowest_class_distance
import keras_gradreg as kg
from keras_gradreg.evaluation import epsilon_search


COLD = dataclasses.replace(FAST, warm_start=False)


@pytest.mark.parametrize("norm,attacks", NORM_ATTACKS)
def test_distances_on_a_binary_linear_classifier_are_the_exact_ones(norm, attacks):
    model, x, y, w, logits = evaluation_problem(classes=2)
    true = linear_distance(w, logits, y, norm)
    assert np.all(true < 0.3)  # the closest boundary points lie inside the data range
    # cold searches: each attack's own distance on every image
    report = kg.evaluate_robustness(model, x, y, attack_norm=norm, attacks=attacks, epsilons=(0.05, 0.1),
                                    budget=COLD, sanity_checks=False, verbose=0)
    assert np.all(report.distances >= true * (1 - 1e-4))  # no attack beats the exact distance
    np.testing.assert_allclose(report.distances, true, rtol=0.02)
    for name, distance in report.attack_distances.items():  # each attack alone is strong too
        assert np.all(distance >= true * (1 - 1e-4)), name
        # CW's Adam steps (lr 0.05 in tanh space) cannot resolve distances below ~0.01
        np.testing.assert_allclose(distance, true, rtol=0.1, atol=0.015 if name == "cw" else 0,
                                   err_msg=name)
    np.testing.assert_allclose(report.error_at(0.1), np.mean(true <= 0.1))
    # the L-bound of a linear model (logit margin ~ probability margin) never exceeds the distance
    assert np.all(report.lower_bounds <= report.distances * (1 + 1e-4))


@pytest.mark.parametrize("norm,attacks", NORM_ATTACKS)
def test_distances_on_a_three_class_linear_classifier_are_within_a_small_factor(norm, attacks):
    """Untargeted attacks head for the runner-up class, not always the nearest boundary."""
    model, x, y, w, logits = evaluation_problem()
    true = linear_distance(w, logits, y, norm)
    report = kg.evaluate_robustness(model, x, y, attack_norm=norm, attacks=attacks, epsilons=(0.05, 0.1),
                                    budget=FAST, sanity_checks=False, verbose=0)
    ratio = report.distances / true
    assert np.all(ratio >= 1 - 1e-4)
    assert np.median(ratio) < 1.01 and np.all(ratio <= 2.5)


def test_warm_and_cold_searches_give_the_same_distances_and_the_warm_one_says_who_won(
        monkeypatch):
    model, x, y, w, logits = evaluation_problem(classes=2)
    true = linear_distance(w, logits, y, "linf")
    starts = []  # what each search of APGD started from
    search = epsilon_search.search

    def recording(*args, start=None, **kwargs):
        starts.append(start)
        return search(*args, start=start, **kwargs)

    monkeypatch.setattr(epsilon_search, "search", lambda *a: recording(*a[:-1], start=a[-1]))
    reports = [kg.evaluate_robustness(model, x, y, attacks=("fab_t", "apgd_ce"), epsilons=(0.1,),
                                      budget=settings, sanity_checks=False, lower_bound=False,
                                      verbose=0) for settings in (COLD, FAST)]
    cold_start, warm_start = starts  # one batch each
    assert np.all(np.isinf(cold_start))
    np.testing.assert_array_equal(warm_start, reports[1].attack_distances["fab_t"])
    for report in reports:
        assert np.all(report.distances >= true * (1 - 1e-4))
        np.testing.assert_allclose(report.distances, true, rtol=0.01)
    cold, warm = reports
    np.testing.assert_allclose(warm.attack_distances["fab_t"], cold.attack_distances["fab_t"])
    assert np.isfinite(cold.attack_distances["apgd_ce"]).all()
    # APGD, searched from FAB-T's distances, counts only where it matched or beat them
    beat = np.isfinite(warm.attack_distances["apgd_ce"])
    assert np.all(warm.attack_distances["apgd_ce"][beat]
                  <= warm.attack_distances["fab_t"][beat] * (1 + 1e-6))
    np.testing.assert_array_equal(warm.distances, np.minimum(warm.attack_distances["apgd_ce"],
                                                             warm.attack_distances["fab_t"]))


def test_every_adversarial_example_is_misclassified_in_range_and_within_its_distance():
    model, x, y, _, _ = evaluation_problem(seed=1)
    report = kg.evaluate_robustness(model, x, y, attack_norm="linf", budget=FAST, sanity_checks=False,
                                    lower_bound=False, verbose=0)
    adv = report.adversarial
    assert np.all(np.argmax(model.predict(adv, verbose=0), 1) != y)
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    actual = np.abs(adv - x).reshape(len(x), -1).max(1)
    np.testing.assert_allclose(actual, report.distances, rtol=1e-6)
    assert set(report.best_attack) <= set(kg.attacks.SETS["minimum_distance"])


@pytest.mark.every_backend
def test_misclassified_images_have_distance_zero_and_count_as_clean_error():
    model, x, y, _, _ = evaluation_problem(seed=2)
    wrong = y.copy()
    wrong[:5] = (y[:5] + 1) % 3
    report = kg.evaluate_robustness(model, x, wrong, attacks=(ONE_STEP,), budget=FAST,
                                    sanity_checks=False, lower_bound=False, verbose=0)
    assert np.all(report.distances[:5] == 0) and np.all(report.distances[5:] > 0)
    assert list(report.best_attack[:5]) == ["clean"] * 5
    assert report.clean_error == pytest.approx(5 / len(y))


def test_softmax_outputs_are_detected_and_give_the_same_distances():
    model, x, y, _, _ = evaluation_problem(seed=3)
    probs = keras.Model(model.inputs, keras.layers.Softmax()(model.outputs[0]))
    kwargs = dict(attacks=("pgd",), budget=FAST, sanity_checks=False, lower_bound=False, verbose=0)
    a = kg.evaluate_robustness(model, x, y, **kwargs)
    b = kg.evaluate_robustness(probs, x, y, **kwargs)
    np.testing.assert_allclose(b.distances, a.distances, rtol=0.01)


def test_labels_of_shape_n_1_give_the_same_report():
    model, x, y, _, _ = evaluation_problem(seed=4)
    kwargs = dict(attacks=(ONE_STEP,), epsilons=(0.1,), budget=FAST, sanity_checks=False, verbose=0)
    flat = kg.evaluate_robustness(model, x, y, **kwargs)
    column = kg.evaluate_robustness(model, x, y[:, None], **kwargs)
    np.testing.assert_array_equal(column.distances, flat.distances)
    np.testing.assert_array_equal(column.lower_bounds, flat.lower_bounds)


def test_a_trained_cnn_on_mnist_digits(trained_cnn, tmp_path):
    """Error grows with epsilon to 100 %, and the L-bound stays below the attacks' distances."""
    model, x, y = trained_cnn
    report = kg.evaluate_robustness(model, x, y, num_images=60, epsilons=(0.05, 0.1, 0.2, 1.0),
                                    budget=FAST, verbose=0)
    errors = [report.error_at(e) for e in report.epsilons]
    assert errors == sorted(errors) and errors[0] > report.clean_error and errors[-1] == 1.0
    assert report.clean_error < 0.3
    assert all(c.passed for c in report.checks), report.checks
    correct = report.distances > 0
    below = report.lower_bounds[correct] <= report.distances[correct]
    assert below.mean() >= 0.95
    paths = kg.write_results([report], str(tmp_path))
    assert json.load(open(paths["json"]))[0]["num_images"] == 60


def test_top_2_error_is_measured_to_where_the_label_scores_lowest():
    """Three classes, l2, top_k=2: each image's distance is that of the nearest point
    where both other classes outscore its label (the closed form), never below it and
    within 10 % above;
    only the attacks that take any k run; the table and the file say top-2."""
    model, x, y, w, logits = linear_image_problem(3, seed=4, n=16, spread=0.05)
    report = kg.evaluate_robustness(model, x, y, attack_norm="l2", epsilons=(0.05,),
                                    num_images=16, budget=FAST, top_k=2,
                                    sanity_checks=False, verbose=0)
    true = lowest_class_distance(w, logits, y)[report.indices]
    assert np.all(report.distances >= true * (1 - 1e-4))
    assert np.all(report.distances <= true * 1.1)  # FAST: 10 steps a radius
    assert np.mean(true * 1.1 <= 0.05) <= report.error_at(0.05) <= np.mean(true <= 0.05)
    assert report.clean_error == 0.0
    assert tuple(report.attack_distances) == kg.attacks.SETS["top_k"]
    assert "top-2 error" in kg.format_table([report]) and report.to_dict()["top_k"] == 2
    with pytest.raises(ValueError, match="top_k=3 must be below the model's 3 classes"):
        kg.evaluate_robustness(model, x, y, top_k=3, verbose=0)
