"""AutoAttack in TF: closed forms on linear classifiers, DLR's invariances, saturation,
gradient masking, the cascade, and bad input."""

import threading
import time
from concurrent import futures

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gradreg as kg
from helpers import linear_distance

SMALL = kg.AutoAttackBudget(apgd_steps=100, target_classes=9, fab_steps=100, square_queries=1000)


def _linear_problem(classes, seed=0, n=16, side=2, scale=1.0):
    """A linear classifier on side x side x 1 images whose closest boundary points stay
    inside [0, 1], its images, labels, weights and logits (the model's logits times scale)."""
    rng = np.random.default_rng(seed)
    dims = side * side
    w = rng.normal(size=(dims, classes))
    b = -0.5 * w.sum(axis=0) + 0.05 * rng.normal(size=classes)
    inputs = keras.Input((side, side, 1))
    dense = keras.layers.Dense(classes)
    model = keras.Model(inputs, scale * dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([w, b])
    x = rng.uniform(0.4, 0.6, size=(n, side, side, 1)).astype("float32")
    logits = x.reshape(n, -1) @ w + b
    return model, x, logits.argmax(1), w, logits


def _broken(model, x, y, attack, norm, eps, budget=SMALL, seed=0):
    """Which images `attack` breaks at radii eps (verified: misclassified, in range, in radius)."""
    model_fn = lambda images: model(images, training=False)
    run = kg.autoattack.make_attack(attack, model_fn, norm, budget, 0.0, 1.0, seed)
    x_adv = np.asarray(run(x, y, np.asarray(eps, np.float32)))
    size = kg.attacks.perturbation_norm(x_adv, x, norm)
    wrong = np.argmax(model.predict(x_adv, verbose=0), 1) != y
    in_range = (x_adv.min() >= 0) and (x_adv.max() <= 1)
    return wrong & in_range & kg.autoattack.within_radius(size, eps, norm, x, 0.0, 1.0), size


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("attack,classes", [("apgd_ce", 2), ("apgd_t", 4), ("apgd_t", 5)])
def test_apgd_breaks_every_image_just_above_the_true_distance_and_none_below(norm, attack, classes):
    """Binary cross-entropy and the targeted DLR loss (every runner-up a target) are
    maximised in the ball at the nearest boundary point of a linear classifier."""
    model, x, y, w, logits = _linear_problem(classes)
    true = linear_distance(w, logits, y, norm)
    assert np.all(true < 0.4)  # x is in [0.4, 0.6]: the boundary points lie inside [0, 1]
    above, _ = _broken(model, x, y, attack, norm, true * 1.02)
    below, _ = _broken(model, x, y, attack, norm, true * 0.98)
    assert above.all() and not below.any()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_untargeted_dlr_breaks_nothing_below_the_true_distance_and_most_above(norm):
    """Untargeted DLR can also rise by pushing the third logit down, so on 3 classes it
    need not reach the nearest boundary (hence APGD-T in AutoAttack); it never fakes one."""
    model, x, y, w, logits = _linear_problem(3, n=32)
    true = linear_distance(w, logits, y, norm)
    above, _ = _broken(model, x, y, "apgd_dlr", norm, true * 1.5)
    below, _ = _broken(model, x, y, "apgd_dlr", norm, true * 0.98)
    assert above.mean() >= 0.6 and not below.any()


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("classes", [2, 4])
def test_fab_distances_are_within_a_few_percent_of_the_closed_form_and_never_below(norm, classes):
    model, x, y, w, logits = _linear_problem(classes, seed=1)
    true = linear_distance(w, logits, y, norm)
    broken, size = _broken(model, x, y, "fab_t", norm, np.full(len(x), np.inf))
    assert broken.all()
    assert np.all(size >= true * (1 - 1e-4))
    np.testing.assert_allclose(size, true, rtol=0.03)


def test_fab_treats_each_image_on_its_own_so_padding_its_batches_changes_nothing():
    """make_attack pads FAB's batches (autoattack.FAB_BATCH_MULTIPLE) by repeating an image:
    an image's example must not depend on the others in its batch."""
    model, x, y, _, _ = _linear_problem(4, seed=2, n=37)
    model_fn = lambda images: model(images, training=False)
    run = kg.autoattack.make_attack("fab_t", model_fn, "linf", SMALL, 0.0, 1.0)
    together = np.asarray(run(x, y, np.full(37, np.inf, np.float32)))
    alone = np.asarray(kg.autoattack.make_attack("fab_t", model_fn, "linf", SMALL, 0.0, 1.0)(
        x[:5], y[:5], np.full(5, np.inf, np.float32)))
    np.testing.assert_allclose(alone, together[:5], atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss,targeted", [("ce", False), ("dlr", False), ("dlr", True)])
def test_apgd_returns_the_same_examples_when_fooled_images_leave_its_batch(
        norm, loss, targeted, monkeypatch):
    """APGD drops the images it fooled from its batch (autoattack.RETIRE_SHARE): every
    image's run is its own, so each example equals that of a run keeping them all."""
    rng = np.random.default_rng(3)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(5)])
    x = rng.uniform(0.3, 0.7, size=(48, 4, 4, 1)).astype("float32")
    logits = model.predict(x, verbose=0)
    y = np.argmax(logits, 1)
    targets = kg.autoattack.runner_up_classes(logits, y, 1)[:, 0] if targeted else None
    eps = np.geomspace(0.005, 0.5, 48).astype("float32") * (1.0 if norm == "linf" else 4.0)
    smallest = tf.Variable(48)  # the smallest batch the model saw

    def model_fn(images):
        smallest.assign(tf.minimum(smallest, tf.shape(images)[0]))
        return model(images, training=False)

    def run():
        smallest.assign(48)
        x_adv = tf.function(lambda: kg.autoattack.apgd(
            model_fn, tf.constant(x), tf.constant(y), tf.constant(eps), attack_norm=norm,
            loss=loss, steps=30, clip_min=0.0, clip_max=1.0,
            targets=None if targets is None else tf.constant(targets), seed=1))().numpy()
        return x_adv, int(smallest.numpy())

    retiring, shed_to = run()
    monkeypatch.setattr(kg.autoattack, "RETIRE_SHARE", 2.0)  # never: every image runs on
    keeping, kept = run()
    fooled = np.argmax(model.predict(keeping, verbose=0), 1) != y
    assert 12 <= fooled.sum() < 48  # enough leave the batch, and some run to the end
    assert kept == 48 and shed_to <= 48 - 6  # the batch did shrink, by at least an eighth
    np.testing.assert_allclose(retiring, keeping, atol=1e-6)


def test_fab_boundary_step_is_the_closed_form_projection():
    """Without the box binding: l2 moves along w by c / ||w||^2, l_inf by c / ||w||_1 signs."""
    w = tf.constant([[3.0, -4.0], [1.0, 1.0]])
    c = tf.constant([10.0, -1.0])
    box = tf.fill([2, 2], 100.0)
    d2 = kg.autoattack._boundary_step(w, c, -box, box, "l2", iterations=60)
    np.testing.assert_allclose(d2.numpy(), [[1.2, -1.6], [0.0, 0.0]], atol=1e-4)
    dinf = kg.autoattack._boundary_step(w, c, -box, box, "linf", iterations=60)
    np.testing.assert_allclose(dinf.numpy(), [[10 / 7, -10 / 7], [0.0, 0.0]], atol=1e-4)
    # a box that binds one coordinate: the other takes up the rest
    tight = tf.constant([[0.5, 100.0], [100.0, 100.0]])
    d = kg.autoattack._boundary_step(w, c, -100.0 * tf.ones([2, 2]), tight, "linf", iterations=60)
    np.testing.assert_allclose(d.numpy()[0], [0.5, -(10 - 1.5) / 4], atol=1e-4)


def test_dlr_is_invariant_to_shifting_and_positive_scaling_of_the_logits():
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(size=(32, 10)), tf.float32)
    y = tf.constant(rng.integers(0, 10, 32))
    targets = tf.constant((y.numpy() + rng.integers(1, 10, 32)) % 10)
    shifted = 7.0 * logits - 3.0 + tf.constant(rng.normal(size=(32, 1)), tf.float32)
    for t in (None, targets):
        a, b = kg.dlr_loss(logits, y, t).numpy(), kg.dlr_loss(shifted, y, t).numpy()
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        assert np.ptp(a) > 0.1  # not a constant
    # untargeted DLR is positive exactly when misclassified
    wrong = logits.numpy().argmax(1) != y.numpy()
    np.testing.assert_array_equal(kg.dlr_loss(logits, y).numpy() > 0, wrong)


def test_saturated_softmax_defeats_cross_entropy_attacks_but_not_dlr_margin_or_square():
    """Logits x 1e4: the cross-entropy's gradient underflows to zero, DLR's does not.
    CleverHans' MIM ascends the cross-entropy too; our FGM/PGD ascend the logit margin."""
    model, x, y, w, logits = _linear_problem(5, seed=2, side=6, scale=1e4)
    eps = 1.5 * linear_distance(w, logits, y, "linf")
    ce, _ = _broken(model, x, y, "apgd_ce", "linf", eps)
    model_fn = lambda images: model(images, training=False)
    settings = kg.AttackSettings()
    mim = kg.attacks.fixed_budget_attack(model_fn, "mim", "linf", settings, 0.0, 1.0)(x, y, eps)
    pgd = kg.attacks.fixed_budget_attack(model_fn, "pgd", "linf", settings, 0.0, 1.0)(x, y, eps)
    fooled = lambda x_adv: np.mean(np.argmax(model.predict(np.asarray(x_adv), verbose=0), 1) != y)
    assert ce.mean() <= 0.25 and fooled(mim) <= 0.25
    assert _broken(model, x, y, "apgd_t", "linf", eps)[0].all()
    assert _broken(model, x, y, "square", "linf", eps)[0].mean() >= 0.75
    assert fooled(pgd) >= 0.75


def _quantised(model, levels):
    """The model on its input rounded to `levels` levels: zero input gradients everywhere."""
    inputs = keras.Input(model.inputs[0].shape[1:])
    rounded = keras.layers.Lambda(
        lambda t: 0.0 * t + tf.stop_gradient(tf.round(t * levels) / levels))(inputs)
    return keras.Model(inputs, model(rounded))


@pytest.mark.parametrize("norm,factor", [("linf", 1.5), ("l2", 2.0)])
def test_square_breaks_a_gradient_masking_model_where_apgd_cannot(norm, factor):
    """Inputs rounded to 1/32: no gradient anywhere, but the decision still moves."""
    model, x, y, w, logits = _linear_problem(4, seed=3, side=6)
    masked = _quantised(model, 32)
    y = np.argmax(masked.predict(x, verbose=0), 1)
    eps = factor * linear_distance(w, logits, y, norm)
    gradient = [_broken(masked, x, y, a, norm, eps)[0] for a in ("apgd_ce", "apgd_t")]
    assert max(g.mean() for g in gradient) <= 0.15  # only the random start can get lucky
    assert _broken(masked, x, y, "square", norm, eps)[0].mean() >= 0.75


@pytest.mark.parametrize("norm,factor", [("linf", 1.2), ("l2", 2.5)])
def test_square_breaks_a_linear_classifier_above_the_true_distance_and_nothing_below(norm, factor):
    """(Square-L2 searches smooth bumps, a poor prior for a random linear classifier: it
    needs a wider margin above the distance than on images.)"""
    model, x, y, w, logits = _linear_problem(4, seed=3, side=6)
    true = linear_distance(w, logits, y, norm)
    assert _broken(model, x, y, "square", norm, factor * true)[0].all()
    assert not _broken(model, x, y, "square", norm, 0.98 * true)[0].any()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_keeps_only_answers_that_lower_the_margin(norm):
    """Query k's draws depend on k alone, so a run of more queries passes through the
    state of a shorter one: each image's margin never rises with the budget, and every
    image's falls within 100 queries (nothing breaks at half the distance, so every
    query runs)."""
    model, x, y, w, logits = _linear_problem(4, seed=3, side=6)
    eps = 0.5 * linear_distance(w, logits, y, norm).astype(np.float32)
    margins = []
    for queries in (1, 2, 5, 20, 100):
        x_adv = kg.autoattack.square(lambda v: model(v, training=False), tf.constant(x),
                                     tf.constant(y), tf.constant(eps), attack_norm=norm,
                                     queries=queries, clip_min=0.0, clip_max=1.0).numpy()
        size = kg.attacks.perturbation_norm(x_adv, x, norm)
        assert np.all(kg.autoattack.within_radius(size, eps, norm, x, 0.0, 1.0))
        bias = logits - x.reshape(len(x), -1) @ w
        z = x_adv.reshape(len(x), -1).astype(np.float64) @ w + bias
        true = z[np.arange(len(x)), y]
        margins.append(true - np.max(np.where(np.eye(4, dtype=bool)[y], -np.inf, z), axis=1))
    margins = np.array(margins)
    assert np.all(margins > 0)
    assert np.all(np.diff(margins, axis=0) <= 1e-5)
    assert np.all(margins[-1] < margins[0] - 1e-3)

def test_cascade_is_no_less_strong_than_any_attack_alone_and_repeats_with_its_seed():
    model, x, y, w, logits = _linear_problem(5, seed=4, n=24, side=4)
    eps = float(np.median(linear_distance(w, logits, y, "linf")))
    kwargs = dict(epsilons=eps, budget=SMALL, verbose=0)
    report, = kg.evaluate_autoattack(model, x, y, **kwargs)
    assert 0 < report.robust_accuracy < report.clean_accuracy == 1.0
    assert list(report.robust_after) == list(kg.autoattack.STANDARD)
    assert list(report.robust_after.values()) == sorted(report.robust_after.values(), reverse=True)
    for attack in kg.autoattack.STANDARD:
        alone, = kg.evaluate_autoattack(model, x, y, attacks=(attack,), **kwargs)
        assert report.robust_accuracy <= alone.robust_accuracy, attack
    again, = kg.evaluate_autoattack(model, x, y, **kwargs)
    np.testing.assert_array_equal(again.broken_by, report.broken_by)
    np.testing.assert_array_equal(again.adversarial, report.adversarial)
    # every broken image's example is verified
    broken = report.broken_by != "none"
    adv = report.adversarial[broken]
    assert np.all(np.argmax(model.predict(adv, verbose=0), 1) != y[broken])
    assert np.all(np.abs(adv - x[broken]).reshape(len(adv), -1).max(1) <= eps * (1 + 1e-5))
    assert report.to_dict()["robust_accuracy"] == report.robust_accuracy


def test_several_radii_in_one_call_are_never_weaker_than_separate_calls_and_grow():
    model, x, y, w, logits = _linear_problem(5, seed=7, n=24, side=4)
    true = linear_distance(w, logits, y, "linf")
    radii = [float(np.quantile(true, q)) for q in (0.7, 0.3)]  # not in increasing order
    kwargs = dict(budget=SMALL, attacks=("apgd_ce", "apgd_t"), verbose=0)
    together = kg.evaluate_autoattack(model, x, y, epsilons=radii, **kwargs)
    assert [r.epsilon for r in together] == radii
    for report, eps in zip(together, radii):
        alone, = kg.evaluate_autoattack(model, x, y, epsilons=eps, **kwargs)
        assert report.robust_error >= alone.robust_error
        broken = report.broken_by != "none"
        assert np.all(np.abs(report.adversarial[broken] - x[broken]).max(axis=(1, 2, 3))
                      <= eps * (1 + 1e-5))
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
    model, x, y, w, logits = _linear_problem(4, seed=5)
    true = linear_distance(w, logits, y, "linf")
    settings = kg.AttackSettings(search_steps=12, autoattack=kg.AutoAttackBudget(
        apgd_steps=50, fab_steps=50, square_queries=500))
    report = kg.evaluate_robustness(model, x, y, attacks="autoattack", epsilons=(0.05,),
                                    settings=settings, sanity_checks=False, lower_bound=False,
                                    verbose=0)
    assert set(report.attack_distances) == {"apgd_ce", "apgd_dlr", "fab_t", "square"}
    assert np.all(report.distances >= true * (1 - 1e-4))
    np.testing.assert_allclose(report.distances, true, rtol=0.05)
    np.testing.assert_allclose(report.attack_distances["fab_t"], true, rtol=0.03)


@pytest.mark.parametrize("kwargs,match", [
    (dict(attacks=("apgd",)), "attack='apgd' is not supported"),
    (dict(attacks="standard"), "non-empty list"),
    (dict(epsilons=1.5), "epsilon=1.5"),
    (dict(epsilons=[0.1, 0.0]), "epsilon=0.0"),
    (dict(epsilons=[]), "epsilons=\\[\\] names no radius"),
    (dict(attack_norm="l1"), "attack_norm='l1'"),
    (dict(budget=kg.AutoAttackBudget), "AutoAttackBudget"),
])
def test_bad_input_is_rejected_before_any_attack(kwargs, match):
    model, x, y, _, _ = _linear_problem(4)
    with pytest.raises(ValueError, match=match):
        kg.evaluate_autoattack(model, x, y, **{"epsilons": 0.1, **kwargs, "verbose": 0})


def test_too_few_classes_and_bad_budgets_are_named():
    model, x, y, _, _ = _linear_problem(3)
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
        kg.evaluation.check_attack_names(None, "linf", "robustbench")
    with pytest.raises(ValueError, match="'spsa' does not support attack_norm='l2'"):
        kg.evaluation.check_attack_names(("pgd", "spsa"), "l2")


def test_softmax_outputs_give_the_same_cascade():
    model, x, y, w, logits = _linear_problem(5, seed=6, side=4)
    probs = keras.Model(model.inputs, keras.layers.Softmax()(model.outputs[0]))
    eps = float(np.median(linear_distance(w, logits, y, "linf")))
    kwargs = dict(epsilons=eps, budget=SMALL, attacks=("apgd_ce", "apgd_t"), verbose=0)
    a, = kg.evaluate_autoattack(model, x, y, **kwargs)
    b, = kg.evaluate_autoattack(probs, x, y, **kwargs)
    assert a.robust_accuracy == b.robust_accuracy


def test_fab_t_at_a_larger_radius_reuses_its_runs_and_breaks_what_a_fresh_run_breaks():
    """FAB-T neither draws nor depends on eps: a second call on the same images runs only
    the target classes the first did not, and breaks within the new radius exactly the
    images a fresh attack breaks (the cascade's radii, run from the smallest)."""
    model, x, y, w, logits = _linear_problem(5, seed=8, n=12)
    true = linear_distance(w, logits, y, "linf")
    small, large = (np.full(len(x), np.float32(np.quantile(true, q))) for q in (0.3, 0.8))
    calls = []

    def model_fn(images):
        calls.append(len(images))
        return model(images, training=False)

    def broken(x_adv, eps):
        size = kg.attacks.perturbation_norm(x_adv, x, "linf")
        return (np.argmax(model.predict(x_adv, verbose=0), 1) != y) & kg.autoattack.within_radius(
            size, eps, "linf", x, 0.0, 1.0)

    remembering = kg.autoattack.make_attack("fab_t", model_fn, "linf", SMALL, 0.0, 1.0)
    remembering(x, y, small)
    first = len(calls)
    again = remembering(x, y, large)
    second = calls[first:]
    fresh = kg.autoattack.make_attack("fab_t", model_fn, "linf", SMALL, 0.0, 1.0)(x, y, large)
    np.testing.assert_array_equal(broken(again, large), broken(fresh, large))
    assert 0 < broken(fresh, large).sum() < len(x)  # the radius separates the images
    # after the small radius every image ran all 4 targets or stopped once broken within
    # it, which it then is within the large one too: the second call only predicts once
    assert second == [len(x)]
    np.testing.assert_array_equal(remembering(x, y, large), again)  # the same answer again


def test_an_attack_traces_twice_at_most_whatever_the_batch_sizes():
    """The first batch size gets a graph, every other size shares one: no retracing as a
    radius search's or a cascade's batches shrink, and the same answers as eager code."""
    traces = []

    def shifted(x, y, eps, offset):
        traces.append(x.shape[0])  # runs only while tracing
        return x + eps[:, None] + tf.cast(y, tf.float32)[:, None] + offset

    run = kg.autoattack.traced_per_image_shape(shifted, tf.TensorSpec((), tf.float32))
    rng = np.random.default_rng(0)
    for n in (5, 3, 5, 2, 7, 3):
        x = rng.uniform(size=(n, 4)).astype(np.float32)
        y, eps = rng.integers(0, 3, n), rng.uniform(size=n).astype(np.float32)
        np.testing.assert_allclose(run(x, y, eps, np.float32(0.5)),
                                   x + eps[:, None] + y[:, None] + 0.5, rtol=1e-6)
    assert traces == [5, None]


def test_batches_attacked_at_the_same_time_trace_one_graph_at_a_time():
    """Threads (evaluation.progress.WORKERS) calling a new attack at once: each graph
    traced once, never two traces at the same time, the same answers."""
    tracing, most, traces = [0], [0], []

    def shifted(x, y, eps):
        tracing[0] += 1  # runs only while tracing
        most[0] = max(most[0], tracing[0])
        time.sleep(0.2)
        traces.append(x.shape[0])
        tracing[0] -= 1
        return x + eps[:, None]

    run = kg.autoattack.traced_per_image_shape(shifted)
    ready = threading.Barrier(4, timeout=20)

    def call(n):
        ready.wait()
        return run(np.ones((n, 4), np.float32), np.zeros(n, np.int64),
                   np.full(n, 0.5, np.float32))

    sizes = [5, 3, 5, 3]
    with futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(call, sizes))
    assert most[0] == 1 and len(traces) == 2 and traces[1] is None, traces
    for n, result in zip(sizes, results):
        np.testing.assert_array_equal(result, np.full((n, 4), 1.5, np.float32))


def test_given_examples_count_first_only_where_verified_and_the_cascade_skips_them():
    model, x, y, w, logits = _linear_problem(5, seed=10, n=16, side=4)
    true = linear_distance(w, logits, y, "linf")
    eps = float(np.quantile(true, 0.6))
    kwargs = dict(epsilons=eps, budget=SMALL, attacks=("apgd_ce",), verbose=0)
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
    step[close], step[far], step[weak] = 1.001 * true[close], 2 * eps, 0.1 * true[weak]
    given = np.clip(x + step[:, None, None, None] * direction, 0, 1)
    report, = kg.evaluate_autoattack(model, x, y, adversarial=given, **kwargs)
    assert report.attacks == (kg.evaluation.GIVEN, "apgd_ce")
    counted = report.broken_by == kg.evaluation.GIVEN
    assert set(np.flatnonzero(counted)) == set(close[1.001 * true[close] <= eps])
    assert counted.sum() >= 3
    np.testing.assert_array_equal(report.adversarial[counted], given[counted].astype(np.float32))
    assert report.robust_error >= alone.robust_error
    assert 1 - report.robust_after[kg.evaluation.GIVEN] == pytest.approx(counted.mean())
    with pytest.raises(ValueError, match=r"adversarial has shape \(15, 4, 4, 1\)"):
        kg.evaluate_autoattack(model, x, y, adversarial=given[1:], **kwargs)
    table = kg.evaluation.format_autoattack_table([report])
    assert "counting first the given examples" in table and "% after given" in table


def test_the_old_epsilon_argument_warns_and_keeps_its_return_type():
    model, x, y, _, _ = _linear_problem(4, n=8)
    kwargs = dict(budget=SMALL, attacks=("apgd_ce",), verbose=0)
    listed = kg.evaluate_autoattack(model, x, y, epsilons=0.1, **kwargs)
    with pytest.warns(DeprecationWarning, match="`epsilon` is renamed `epsilons`") as record:
        single = kg.evaluate_autoattack(model, x, y, epsilon=0.1, **kwargs)
    assert record[0].filename == __file__  # the user's line, not the library's
    assert isinstance(listed, list) and len(listed) == 1
    np.testing.assert_array_equal(single.broken_by, listed[0].broken_by)
    with pytest.warns(DeprecationWarning):
        several = kg.evaluate_autoattack(model, x, y, epsilon=[0.1], **kwargs)
    np.testing.assert_array_equal(several[0].broken_by, listed[0].broken_by)
    with pytest.raises(TypeError, match="both `epsilon`.*and `epsilons`"):
        kg.evaluate_autoattack(model, x, y, epsilon=0.1, epsilons=0.1, **kwargs)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['radius'\]"):
        kg.evaluate_autoattack(model, x, y, radius=0.1, **kwargs)
    with pytest.raises(TypeError, match="needs `epsilons`"):
        kg.evaluate_autoattack(model, x, y, **kwargs)
