"""make_attack: each attack compiled once per model and shape, FAB-T's memory, top-k
error, bad input."""

from concurrent import futures
import threading

import keras
import numpy as np
import pytest

from helpers import SMALL_BUDGET
from helpers import TraceCounter
from helpers import broken_by
from helpers import judge_for
from helpers import linear_distance
from helpers import linear_image_problem
from helpers import lowest_class_distance
import keras_gradreg as kg
from keras_gradreg.attacks import registry


@pytest.mark.every_backend
def test_too_few_classes_and_bad_budgets_are_named():
    model, x, y, _, _ = linear_image_problem(3)
    with pytest.raises(ValueError, match="'apgd_t' needs at least 4 classes.*has 3"):
        kg.evaluate_autoattack(model, x, y, epsilons=0.1, verbose=0)
    with pytest.raises(ValueError, match="'square' needs images"):
        flat = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)])
        kg.evaluate_robustness(flat, x.reshape(len(x), 4), y, attacks=("square",), verbose=0)
    with pytest.raises(ValueError, match="apgd_steps=0"):
        kg.AutoAttackBudget(apgd_steps=0)
    with pytest.raises(ValueError, match="attacks='autoatack' is not a set"):
        kg.evaluate_robustness(model, x, y, attacks="autoatack", verbose=0)
    with pytest.raises(ValueError, match="protocol='robustbench' is not supported"):
        kg.evaluation.check_attacks(None, "linf", "robustbench")
    with pytest.raises(ValueError, match="'spsa' does not support attack_norm='l2'"):
        kg.evaluation.check_attacks(("pgd", "spsa"), "l2")
    with pytest.raises(ValueError, match="attack='cw' is not supported.*'apgd_ce'"):
        kg.evaluation.check_attacks(("cw",), "l2", "autoattack")  # the cascade: AutoAttack's


@pytest.mark.every_backend
def test_the_table_says_what_each_attack_supports_and_every_set_holds_known_attacks():
    attacks = registry.ATTACKS
    assert {n for n, a in attacks.items() if a.gradient_free} == {"spsa", "square"}
    assert {n for n, a in attacks.items() if a.minimises_distance} == {"cw", "fab_t"}
    assert {n for n, a in attacks.items() if a.targeted} == {"apgd_t", "fab_t"}
    assert attacks["cw"].norms == ("l2",) and attacks["spsa"].norms == ("linf",)
    assert registry.SETS["standard"] == ("apgd_ce", "apgd_t", "fab_t", "square")  # RobustBench's
    for names in registry.SETS.values():
        assert set(names) <= set(attacks)


def test_fab_t_at_a_larger_radius_reuses_its_runs_and_breaks_what_a_fresh_run_breaks():
    """FAB-T neither draws nor depends on epsilon: a second call on the same images runs only
    the target classes the first did not, and breaks within the new radius exactly the
    images a fresh attack breaks (the cascade's radii, run from the smallest)."""
    model, x, y, w, logits = linear_image_problem(5, seed=8, n=12)
    true = linear_distance(w, logits, y, "linf")
    small, large = (np.full(len(x), np.float32(np.quantile(true, q))) for q in (0.3, 0.8))
    judge = judge_for(model, x, "linf")
    budget = kg.AttackBudget(autoattack=SMALL_BUDGET)

    def broken(x_adv, epsilon):
        return judge.verify(x_adv, x, y, epsilon)[0]

    remembering = registry.make_attack("fab_t", judge, budget)
    remembering(x, y, small)
    rounds = []
    run = remembering.run
    remembering.run = lambda x, y, epsilon, targets, r: rounds.append(len(x)) or run(
        x, y, epsilon, targets, r)
    again = remembering(x, y, large)
    fresh = registry.make_attack("fab_t", judge, budget)(x, y, large)
    np.testing.assert_array_equal(broken(again, large), broken(fresh, large))
    assert 0 < broken(fresh, large).sum() < len(x)  # the radius separates the images
    # after the small radius every image ran all 4 targets or stopped once broken within
    # it, which it then is within the large one too: the second call runs nothing
    assert rounds == []
    np.testing.assert_array_equal(remembering(x, y, large), again)  # the same answer again


def _counted(model):
    """The model behind a TraceCounter: what traces its compiled attacks count."""
    counter = TraceCounter()
    counted = keras.Sequential([keras.Input(model.input_shape[1:]), counter, model])
    counter.traces.clear()  # Keras' own symbolic call while building
    return counted, counter.traces


@pytest.mark.skipif(keras.backend.backend() == "torch",
                    reason="PyTorch runs the attacks eagerly: nothing is traced")
@pytest.mark.every_backend
def test_an_attack_traces_a_few_times_at_most_whatever_the_batch_sizes():
    """TensorFlow traces the first batch size, then one graph for any size; JAX pads each
    batch to a few sizes (registry.padded_size) and compiles once per size: a radius
    search's or a cascade's shrinking batches trace no more, and each image's example is
    what it is in a larger batch."""
    model, x, y, w, logits = linear_image_problem(3, seed=1, n=8)
    counted, traces = _counted(model)
    attack = registry.make_attack("apgd_ce", judge_for(counted, x, "linf", batch_size=8),
                                  kg.AttackBudget(autoattack=kg.attacks.SEARCH_BUDGET))
    epsilon = np.full(8, 0.05, np.float32)
    whole = attack(x, y, epsilon)
    after_first = len(traces)
    sizes = (5, 3, 5, 2, 7, 3, 6)
    for n in sizes:
        np.testing.assert_allclose(attack(x[:n], y[:n], epsilon[:n]), whole[:n], atol=1e-6)
    pads = kg.backend.current().PADDING == "buckets"
    graphs = len({registry.padded_size(n, 8) for n in sizes} - {8}) if pads else 1
    assert 0 < after_first and len(traces) - after_first <= graphs * after_first
    assert graphs == (3 if pads else 1)  # JAX: sizes 6, 3 and 2


@pytest.mark.parametrize("name", ["apgd_ce", "square"])
@pytest.mark.every_backend
def test_a_batch_run_in_parts_gives_each_image_what_the_whole_batch_gives(name, monkeypatch):
    """The parts of a batch (registry.batch_parts; JAX on CPUs: one per core) draw each
    image's random numbers as the whole batch does: the same examples."""
    model, x, y, w, logits = linear_image_problem(3, seed=1, n=40)
    judge = judge_for(model, x, "linf", batch_size=40)
    budget = kg.AttackBudget(autoattack=kg.AutoAttackBudget(apgd_steps=10, square_queries=100))
    epsilon = np.full(40, 0.05, np.float32)
    found = []
    for parts in (1, 3):
        monkeypatch.setattr(registry, "batch_parts", lambda n, p=parts: p)
        found.append(registry.make_attack(name, judge, budget, seed=3)(x, y, epsilon))
    np.testing.assert_allclose(found[0], found[1], atol=1e-6)
    assert np.any(found[0] != x)  # the attack moved the images


@pytest.mark.every_backend
def test_a_batch_is_split_over_the_cores_only_where_the_backend_splits_batches(monkeypatch):
    here = kg.backend.current()
    monkeypatch.setattr(registry.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    expected = [1, 1, 2, 3, 3] if here.SPLITS_BATCHES and not here.has_gpu() else [1] * 5
    assert [registry.batch_parts(n) for n in (5, 16, 32, 48, 128)] == expected
    assert here.SPLITS_BATCHES == (keras.backend.backend() == "jax")


def test_batches_are_padded_to_two_sizes_per_doubling_or_a_multiple_or_not_at_all():
    sizes = [registry.padded_size(n, 128) for n in range(1, 129)]
    assert sorted(set(sizes)) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128]
    assert all(n <= size < 1.5 * n + 1 for n, size in zip(range(1, 129), sizes))
    assert [registry.padded_size(n, 100) for n in (70, 99, 100, 101, 250)] == [96, 100, 100, 200, 300]
    assert [registry.padded_size(n, 128, 32, "multiple") for n in (5, 40, 200)] == [32, 64, 224]
    assert [registry.padded_size(n, 128, 32, "none") for n in (5, 200)] == [5, 200]
    with pytest.raises(ValueError, match=r"padding='pad' is not supported; use one of \('buckets'"):
        registry.padded_size(5, 128, padding="pad")


@pytest.mark.every_backend
def test_batches_attacked_at_the_same_time_give_what_one_at_a_time_gives():
    """Threads (evaluation.progress.in_batches) calling a new attack at once: the examples
    of attacking each batch alone, and on TensorFlow and JAX two graphs at most."""
    model, x, y, w, logits = linear_image_problem(3, seed=1, n=8)
    counted, traces = _counted(model)
    attack = registry.make_attack("pgd", judge_for(counted, x, "linf", batch_size=8),
                                  kg.AttackBudget(steps=5))
    epsilon = np.full(8, 0.05, np.float32)
    ready = threading.Barrier(4, timeout=20)
    sizes = [5, 3, 5, 3]

    def call(n):
        ready.wait()
        return attack(x[:n], y[:n], epsilon[:n])

    with futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(call, sizes))
    if kg.backend.current().COMPILES_STEPS:  # eager PyTorch calls the model, traces nothing
        assert len(traces) <= 2 * 2, traces  # (each graph calls the model twice: PGD, its check)
    for n, result in zip(sizes, results):
        np.testing.assert_allclose(result, attack(x[:n], y[:n], epsilon[:n]), atol=1e-6)


@pytest.mark.parametrize("attack,factor", [("pgd", 1.1), ("apgd_ce", 1.5)])
@pytest.mark.every_backend
def test_top_2_attacks_push_the_label_below_both_other_classes_near_the_exact_distance(
        attack, factor):
    """Three classes, l2: out of the top 2 means the label scores lowest, the nearest
    point of two half-spaces (helpers.lowest_class_distance, checked against a solver).
    PGD ascends the top-2 margin, a minimum of two linear functions whose kink its fixed
    steps circle (all broken at 1.1x, 60-75 % at 1.02x, seeds 0-3), as they circle
    top-1's kink between the two other classes (15 or 16 of 16 at 1.1x); APGD-CE the
    cross-entropy, whose maximiser need not leave the label lowest (all at 1.5x, half at
    1.1x)."""
    model, x, y, w, logits = linear_image_problem(3, seed=4, n=16, spread=0.05)
    true = lowest_class_distance(w, logits, y)
    top_1 = linear_distance(w, logits, y, "l2")
    assert np.all(true > top_1 * 1.05) and np.all(true < 0.45)  # a real difference; inside [0, 1]
    above, _ = broken_by(model, x, y, attack, "l2", true * factor, top_k=2)
    below, _ = broken_by(model, x, y, attack, "l2", true * 0.98, top_k=2)
    top_1_only, _ = broken_by(model, x, y, attack, "l2", top_1 * factor, top_k=1)
    assert above.all() and not below.any() and top_1_only.mean() >= 15 / 16


@pytest.mark.every_backend
def test_attacks_of_top_1_error_only_are_refused_with_top_k_and_the_default_is_named():
    assert registry.resolve(None, "linf", "minimum_distance", top_k=5) == registry.SETS["top_k"]
    with pytest.raises(ValueError, match=r"'fab_t' aims at top-1.*top_k=5.*'apgd_ce'"):
        registry.resolve(["apgd_ce", "fab_t"], "linf", "minimum_distance", top_k=5)
    with pytest.raises(ValueError, match="top_k=5: AutoAttack's cascade measures top-1"):
        kg.evaluation.check_attacks(None, "linf", "autoattack", top_k=5)
    with pytest.raises(ValueError, match="top_k=0"):
        kg.evaluation.check_attacks(None, "linf", "minimum_distance", top_k=0)
