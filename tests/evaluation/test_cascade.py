"""AutoAttack's cascade: never weaker than its attacks, several radii, given examples, bad input."""

import keras
import numpy as np
import pytest

from helpers import SMALL_BUDGET
from helpers import linear_distance
from helpers import linear_image_problem
import keras_gradreg as kg


def test_cascade_is_no_less_strong_than_any_attack_alone_and_repeats_with_its_seed():
    model, x, y, w, logits = linear_image_problem(5, seed=4, n=24, side=4)
    epsilon = float(np.median(linear_distance(w, logits, y, "linf")))
    kwargs = dict(epsilons=epsilon, budget=SMALL_BUDGET, verbose=0)
    report, = kg.evaluate_autoattack(model, x, y, **kwargs)
    assert 0 < report.robust_accuracy < report.clean_accuracy == 1.0
    assert list(report.robust_after) == list(kg.attacks.SETS["standard"])
    assert list(report.robust_after.values()) == sorted(report.robust_after.values(), reverse=True)
    for attack in kg.attacks.SETS["standard"]:
        alone, = kg.evaluate_autoattack(model, x, y, attacks=(attack,), **kwargs)
        assert report.robust_accuracy <= alone.robust_accuracy, attack
    again, = kg.evaluate_autoattack(model, x, y, **kwargs)
    np.testing.assert_array_equal(again.broken_by, report.broken_by)
    np.testing.assert_array_equal(again.adversarial, report.adversarial)
    # every broken image's example is verified
    broken = report.broken_by != "none"
    adv = report.adversarial[broken]
    assert np.all(np.argmax(model.predict(adv, verbose=0), 1) != y[broken])
    assert np.all(np.abs(adv - x[broken]).reshape(len(adv), -1).max(1) <= epsilon * (1 + 1e-5))
    assert report.to_dict()["robust_accuracy"] == report.robust_accuracy


def test_several_radii_in_one_call_are_never_weaker_than_separate_calls_and_grow():
    model, x, y, w, logits = linear_image_problem(5, seed=7, n=24, side=4)
    true = linear_distance(w, logits, y, "linf")
    radii = [float(np.quantile(true, q)) for q in (0.7, 0.3)]  # not in increasing order
    kwargs = dict(budget=SMALL_BUDGET, attacks=("apgd_ce", "apgd_t"), verbose=0)
    together = kg.evaluate_autoattack(model, x, y, epsilons=radii, **kwargs)
    assert [r.epsilon for r in together] == radii
    for report, epsilon in zip(together, radii):
        alone, = kg.evaluate_autoattack(model, x, y, epsilons=epsilon, **kwargs)
        assert report.robust_error >= alone.robust_error
        broken = report.broken_by != "none"
        assert np.all(np.abs(report.adversarial[broken] - x[broken]).max(axis=(1, 2, 3))
                      <= epsilon * (1 + 1e-5))
    small, large = together[1], together[0]
    assert 0 < small.robust_error < large.robust_error < 1  # both radii did work
    assert np.all((small.broken_by != "none") <= (large.broken_by != "none"))
    table = kg.evaluation.format_autoattack_table(together, [0.625, 0.125]).splitlines()
    assert "% minimum-distance error, same images" in table[1]
    assert [row.split()[4] for row in table[3:]] == ["62.50", "12.50"]
    assert "same images" not in kg.evaluation.format_autoattack_table(together)
    with pytest.raises(ValueError, match="1 values for 2 reports"):
        kg.evaluation.format_autoattack_table(together, [0.5])


def test_autoattack_names_in_the_minimum_distance_evaluation():
    model, x, y, w, logits = linear_image_problem(4, seed=5)
    true = linear_distance(w, logits, y, "linf")
    settings = kg.AttackBudget(search_steps=12, autoattack=kg.AutoAttackBudget(
        apgd_steps=50, fab_steps=50, square_queries=500))
    report = kg.evaluate_robustness(model, x, y, attacks="autoattack", epsilons=(0.05,),
                                    budget=settings, sanity_checks=False, lower_bound=False,
                                    verbose=0)
    assert set(report.attack_distances) == {"apgd_ce", "apgd_dlr", "fab_t", "square"}
    assert np.all(report.distances >= true * (1 - 1e-4))
    np.testing.assert_allclose(report.distances, true, rtol=0.05)
    np.testing.assert_allclose(report.attack_distances["fab_t"], true, rtol=0.03)


@pytest.mark.parametrize("kwargs,match", [
    (dict(attacks=("apgd",)), "attack='apgd' is not supported"),
    (dict(attacks=()), "non-empty list"),
    (dict(attacks="standrd"), "attacks='standrd' is not a set"),
    (dict(epsilons=1.5), "epsilon=1.5"),
    (dict(epsilons=[0.1, 0.0]), "epsilon=0.0"),
    (dict(epsilons=[]), "epsilons=\\[\\] names no radius"),
    (dict(attack_norm="l1"), "attack_norm='l1'"),
    (dict(budget=kg.AutoAttackBudget), "AutoAttackBudget"),
])
@pytest.mark.every_backend
def test_bad_input_is_rejected_before_any_attack(kwargs, match):
    model, x, y, _, _ = linear_image_problem(4)
    with pytest.raises(ValueError, match=match):
        kg.evaluate_autoattack(model, x, y, **{"epsilons": 0.1, **kwargs, "verbose": 0})


@pytest.mark.every_backend
def test_no_images_and_images_the_model_does_not_take_are_refused_by_name():
    model, x, y, _, _ = linear_image_problem(4)
    with pytest.raises(ValueError, match=r"x holds no images \(shape \(0, 2, 2, 1\)\)"):
        kg.evaluate_autoattack(model, x[:0], y[:0], epsilons=0.1, verbose=0)
    with pytest.raises(ValueError, match=r"takes images of shape \(2, 2, 1\); x holds images of "
                                         r"shape \(3, 3, 1\)"):
        kg.evaluate_autoattack(model, np.zeros((4, 3, 3, 1)), y[:4], epsilons=0.1, verbose=0)


def test_softmax_outputs_give_the_same_cascade():
    model, x, y, w, logits = linear_image_problem(5, seed=6, side=4)
    probs = keras.Model(model.inputs, keras.layers.Softmax()(model.outputs[0]))
    epsilon = float(np.median(linear_distance(w, logits, y, "linf")))
    kwargs = dict(epsilons=epsilon, budget=SMALL_BUDGET, attacks=("apgd_ce", "apgd_t"), verbose=0)
    a, = kg.evaluate_autoattack(model, x, y, **kwargs)
    b, = kg.evaluate_autoattack(probs, x, y, **kwargs)
    assert a.robust_accuracy == b.robust_accuracy


def test_given_examples_count_first_only_where_verified_and_the_cascade_skips_them():
    model, x, y, w, logits = linear_image_problem(5, seed=10, n=16, side=4)
    true = linear_distance(w, logits, y, "linf")
    epsilon = float(np.quantile(true, 0.6))
    kwargs = dict(epsilons=epsilon, budget=SMALL_BUDGET, attacks=("apgd_ce",), verbose=0)
    alone, = kg.evaluate_autoattack(model, x, y, **kwargs)
    # closed-form crossings of each image's closest boundary (to class j: the l_inf step
    # along sign(w_j - w_y) closes z_j - z_y at rate ||w_j - w_y||_1): just past it for
    # the 4 closest images, twice the radius for the 4 farthest, and a tenth of the way
    # (still correctly classified) for 4 more
    gap = logits[np.arange(len(y)), y, None] - logits
    rate = np.abs(w[:, y].T[:, :, None] - w[None]).sum(1)
    closest = np.argmin(np.where(np.eye(5)[y] > 0, np.inf, gap / rate), axis=1)
    direction = np.sign(w[:, closest] - w[:, y]).T.reshape(x.shape)
    order = np.argsort(true)
    close, far, weak = order[:4], order[-4:], order[4:8]
    step = np.zeros(len(x))
    step[close], step[far], step[weak] = 1.001 * true[close], 2 * epsilon, 0.1 * true[weak]
    given = np.clip(x + step[:, None, None, None] * direction, 0, 1)
    report, = kg.evaluate_autoattack(model, x, y, adversarial=given, **kwargs)
    assert report.attacks == (kg.evaluation.GIVEN, "apgd_ce")
    counted = report.broken_by == kg.evaluation.GIVEN
    assert set(np.flatnonzero(counted)) == set(close[1.001 * true[close] <= epsilon])
    assert counted.sum() >= 3
    np.testing.assert_array_equal(report.adversarial[counted], given[counted].astype(np.float32))
    assert report.robust_error >= alone.robust_error
    assert 1 - report.robust_after[kg.evaluation.GIVEN] == pytest.approx(counted.mean())
    with pytest.raises(ValueError, match=r"adversarial has shape \(15, 4, 4, 1\)"):
        kg.evaluate_autoattack(model, x, y, adversarial=given[1:], **kwargs)
    table = kg.evaluation.format_autoattack_table([report])
    assert "counting first the given examples" in table and "% after given" in table
