"""Robustness evaluation: closed-form distances, verified examples, sanity checks, files."""

import csv
import dataclasses
import json
import os
import sys
import threading
import time
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gradreg as kg
from helpers import linear_distance
from keras_gradreg.evaluation import progress as progress_lib

FAST = kg.AttackSettings(steps=10, search_steps=12, cw_binary_steps=4, cw_iterations=200,
                         cw_learning_rate=0.05, spsa_samples=64)
COLD = dataclasses.replace(FAST, warm_start=False)


def _linear_problem(seed=0, n=24, classes=3):
    """A linear classifier on 2x2x1 images whose closest boundary points stay inside [0, 1]."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(4, classes))
    b = -0.5 * w.sum(axis=0) + 0.05 * rng.normal(size=classes)  # boundaries cross the data
    inputs = keras.Input((2, 2, 1))
    dense = keras.layers.Dense(classes)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([w, b])
    x = rng.uniform(0.35, 0.65, size=(n, 2, 2, 1)).astype("float32")
    logits = x.reshape(n, -1) @ w + b
    y = logits.argmax(1)
    return model, x, y, w, logits


NORM_ATTACKS = [("linf", ("fgm", "pgd", "mim")), ("l2", ("fgm", "pgd", "cw"))]


@pytest.mark.parametrize("norm,attacks", NORM_ATTACKS)
def test_distances_on_a_binary_linear_classifier_are_the_exact_ones(norm, attacks):
    model, x, y, w, logits = _linear_problem(classes=2)
    true = linear_distance(w, logits, y, norm)
    assert np.all(true < 0.3)  # the closest boundary points lie inside the data range
    # cold searches: each attack's own distance on every image
    report = kg.evaluate_robustness(model, x, y, attack_norm=norm, attacks=attacks, epsilons=(0.05, 0.1),
                                    settings=COLD, sanity_checks=False, verbose=0)
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
    model, x, y, w, logits = _linear_problem()
    true = linear_distance(w, logits, y, norm)
    report = kg.evaluate_robustness(model, x, y, attack_norm=norm, attacks=attacks, epsilons=(0.05, 0.1),
                                    settings=FAST, sanity_checks=False, verbose=0)
    ratio = report.distances / true
    assert np.all(ratio >= 1 - 1e-4)
    assert np.median(ratio) < 1.01 and np.all(ratio <= 2.0)


def _threshold_attack(thresholds):
    """A synthetic attack on 1-pixel images 0 whose label i is its index: it breaks image i
    exactly at radii >= thresholds[i], by a perturbation of norm eps. Counts its runs."""
    runs = np.zeros(len(thresholds), int)

    def attack(x, y, eps):
        runs[y] += 1
        return x + np.where(eps >= thresholds[y], eps, 0.0)[:, None]

    return attack, lambda x_adv, y: x_adv[:, 0] >= thresholds[y], runs


def test_a_warm_started_search_finds_the_cold_distance_in_fewer_runs_or_gives_up_below_it():
    thresholds = np.array([0.07, 0.1, 0.27, 0.5])
    x, y = np.zeros((4, 1)), np.arange(4)
    tolerance = 2.0 ** -10
    attack, check, runs = _threshold_attack(thresholds)
    cold, _, cold_width = kg.attacks.minimum_distance(attack, check, x, y, "linf", 1.0, 12,
                                                      tolerance)
    cold_runs = runs.copy()
    # starts a little above, far above (4x: the geometric phase takes over) and below
    start = thresholds * np.array([1.02, 1.03, 4.0, 0.98])
    runs[:] = 0
    warm, examples, width = kg.attacks.minimum_distance(attack, check, x, y, "linf", 1.0, 12,
                                                        tolerance, start)
    for found, w in ((cold[:3], cold_width[:3]), (warm[:3], width[:3])):
        assert np.all(found >= thresholds[:3])
        assert np.all(found <= thresholds[:3] * (1 + w + 1e-12))
    assert np.all(width[:2] <= tolerance) and np.all(cold_width <= 0.003)
    assert warm[3] == np.inf and examples[3, 0] == 0.0  # not broken at its start: given up
    # near the threshold: the start, 15/16 of it, then 7 halvings of the 1/16 bracket
    np.testing.assert_array_equal(runs, [9, 9, runs[2], 1])
    assert np.all(cold_runs == 13) and runs[2] <= 13


def test_warm_and_cold_searches_give_the_same_distances_and_the_warm_one_says_who_won(
        monkeypatch):
    model, x, y, w, logits = _linear_problem(classes=2)
    true = linear_distance(w, logits, y, "linf")
    starts = []  # what each search of APGD started from
    search = kg.attacks.minimum_distance

    def recording(*args, start=None, **kwargs):
        starts.append(start)
        return search(*args, start=start, **kwargs)

    monkeypatch.setattr(kg.attacks, "minimum_distance", lambda *a: recording(*a[:-1], start=a[-1]))
    reports = [kg.evaluate_robustness(model, x, y, attacks=("fab_t", "apgd_ce"), epsilons=(0.1,),
                                      settings=settings, sanity_checks=False, lower_bound=False,
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
    model, x, y, _, _ = _linear_problem(seed=1)
    report = kg.evaluate_robustness(model, x, y, attack_norm="linf", settings=FAST, sanity_checks=False,
                                    lower_bound=False, verbose=0)
    adv = report.adversarial
    assert np.all(np.argmax(model.predict(adv, verbose=0), 1) != y)
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    actual = np.abs(adv - x).reshape(len(x), -1).max(1)
    np.testing.assert_allclose(actual, report.distances, rtol=1e-6)
    assert set(report.best_attack) <= set(kg.evaluation.DEFAULT_ATTACKS["linf"])


def test_misclassified_images_have_distance_zero_and_count_as_clean_error():
    model, x, y, _, _ = _linear_problem(seed=2)
    wrong = y.copy()
    wrong[:5] = (y[:5] + 1) % 3
    report = kg.evaluate_robustness(model, x, wrong, attacks=("fgm",), settings=FAST,
                                    sanity_checks=False, lower_bound=False, verbose=0)
    assert np.all(report.distances[:5] == 0) and np.all(report.distances[5:] > 0)
    assert list(report.best_attack[:5]) == ["clean"] * 5
    assert report.clean_error == pytest.approx(5 / len(y))


def test_softmax_outputs_are_detected_and_give_the_same_distances():
    model, x, y, _, _ = _linear_problem(seed=3)
    probs = keras.Model(model.inputs, keras.layers.Softmax()(model.outputs[0]))
    kwargs = dict(attacks=("pgd",), settings=FAST, sanity_checks=False, lower_bound=False, verbose=0)
    a = kg.evaluate_robustness(model, x, y, **kwargs)
    b = kg.evaluate_robustness(probs, x, y, **kwargs)
    np.testing.assert_allclose(b.distances, a.distances, rtol=0.01)


def test_carlini_wagner_and_spsa_run_on_keras_3():
    """cleverhans 4.0.0's own CW-L2 and SPSA fail on Keras 3; the adapters must keep working."""
    model, x, y, w, logits = _linear_problem(seed=4, n=4)
    cw = kg.evaluate_robustness(model, x, y, attack_norm="l2", attacks=("cw",), settings=FAST,
                                sanity_checks=False, lower_bound=False, verbose=0)
    assert np.all(np.isfinite(cw.distances))
    spsa = kg.evaluate_robustness(model, x, y, attack_norm="linf", attacks=("spsa",), settings=FAST,
                                  sanity_checks=False, lower_bound=False, verbose=0)
    assert np.sum(np.isfinite(spsa.distances)) >= 2  # gradient-free and given few steps
    assert np.all(spsa.distances >= linear_distance(w, logits, y, "linf") * (1 - 1e-4))


def _masked_model():
    """Rounds its input to 4 levels: zero gradients everywhere, a gradient-masking model."""
    model, x, y, _, _ = _linear_problem(seed=5)
    inputs = keras.Input((2, 2, 1))
    quantised = keras.layers.Lambda(
        lambda t: 0.0 * t + tf.stop_gradient(tf.round(t * 4.0) / 4.0))(inputs)
    return keras.Model(inputs, model(quantised)), x, y


def test_sanity_checks_fire_on_a_gradient_masking_model():
    model, x, y = _masked_model()
    with pytest.warns(UserWarning, match="Sanity check"):
        report = kg.evaluate_robustness(model, x, y, attacks=("pgd", "spsa"), epsilons=(0.1, 0.3),
                                        settings=FAST, lower_bound=False, verbose=0)
    failed = {c.name for c in report.checks if not c.passed}
    assert "unbounded attack succeeds" in failed
    assert "gradient-free attack does not beat gradient attacks" in failed


def test_square_flags_gradient_masking_when_no_gradient_free_attack_runs_and_the_table_says_so():
    model, x, y = _masked_model()
    with pytest.warns(UserWarning, match="Sanity check 'gradient-free attack"):
        report = kg.evaluate_robustness(model, x, y, attacks=("pgd",), epsilons=(0.1, 0.3),
                                        settings=FAST, lower_bound=False, verbose=0)
    check = next(c for c in report.checks if c.name == kg.evaluation.MASKING_CHECK)
    assert not check.passed and check.value > kg.evaluation.GRADIENT_FREE_SHARE
    assert check.detail.startswith("square broke")
    assert f"{100 * check.value:.1f} FAILED" in kg.format_table([report])
    assert set(report.seconds) == {"pgd", "sanity_checks"} and min(report.seconds.values()) > 0


def test_sanity_checks_stay_quiet_on_a_plain_model():
    model, x, y, _, _ = _linear_problem(seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        report = kg.evaluate_robustness(model, x, y, epsilons=(0.05, 0.1, 0.2), settings=FAST,
                                        lower_bound=False, verbose=0)
    assert report.checks and all(c.passed for c in report.checks)
    assert kg.evaluation.MASKING_CHECK in {c.name for c in report.checks}  # Square ran


def test_the_checks_attack_only_their_subset_and_say_on_how_many_images(monkeypatch):
    """The PGD checks run on the first CHECK_IMAGES images and Square only on correctly
    classified ones among them; a masking model still fails the masking check."""
    model, x, y = _masked_model()
    monkeypatch.setattr(kg.evaluation.sanity, "CHECK_IMAGES", 10)
    calls = []
    make_attack = kg.autoattack.make_attack

    def counted(name, *args, **kwargs):
        attack = make_attack(name, *args, **kwargs)

        def run(images, labels, eps):
            calls.append((name, len(images)))
            return attack(images, labels, eps)

        return run

    monkeypatch.setattr(kg.autoattack, "make_attack", counted)
    with pytest.warns(UserWarning, match="Sanity check 'gradient-free attack"):
        report = kg.evaluate_robustness(model, x, y, attacks=("pgd",), epsilons=(0.1, 0.3),
                                        settings=FAST, lower_bound=False, verbose=0)
    checks = {c.name: c for c in report.checks}
    correct = int((report.distances[:10] > 0).sum())
    assert checks["error grows with epsilon"].images == 10
    assert checks["doubling PGD steps changes little"].images == 10
    assert "on 10 images" in checks["doubling PGD steps changes little"].detail
    masking = checks[kg.evaluation.MASKING_CHECK]
    assert masking.images == correct and f"of the {correct} correctly" in masking.detail
    assert 0 < sum(n for name, n in calls if name == "square") <= correct
    assert masking.value > kg.evaluation.GRADIENT_FREE_SHARE and not masking.passed
    assert checks["unbounded attack succeeds"].images is None


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(attack_norm="l1"), "attack_norm='l1'"),
        (dict(attacks=("deepfool",)), "attack='deepfool' is not supported"),
        (dict(attack_norm="linf", attacks=("cw",)), "'cw' does not support attack_norm='linf'"),
        (dict(epsilons=(0.1, 1.5)), r"epsilon=1.5 .*\(1 is the largest linf distance"),
        (dict(epsilons=(0.0,)), "epsilon=0.0"),
        (dict(epsilons=()), r"epsilons=\(\) names no radius"),
        (dict(epsilons=(float("nan"),)), "epsilon=nan"),
        (dict(clip_max=0.5), "outside the declared range"),
        (dict(num_images=0), "num_images=0"),
    ],
)
def test_bad_input_is_rejected_before_any_attack(kwargs, match):
    model, x, y, _, _ = _linear_problem()
    with pytest.raises(ValueError, match=match):
        kg.evaluate_robustness(model, x, y, verbose=0, **kwargs)


@pytest.mark.parametrize("kwargs,match", [(dict(steps=0), "steps=0"), (dict(restarts=1.5), "restarts=1.5"),
                                          (dict(cw_learning_rate=-1.0), "cw_learning_rate=-1.0"),
                                          (dict(spsa_samples=3), "spsa_samples=3"),
                                          (dict(spsa_delta=float("inf")), "spsa_delta=inf"),
                                          (dict(search_tolerance=1.0), "search_tolerance=1.0"),
                                          (dict(search_tolerance=-0.5), r"search_tolerance=-0.5 .* \[0, 1\)"),
                                          (dict(warm_start="yes"), "warm_start='yes' must be True")])
def test_bad_attack_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kg.AttackSettings(**kwargs)


def test_bad_labels_and_outputs_are_rejected():
    model, x, y, _, _ = _linear_problem()
    with pytest.raises(ValueError, match="labels"):
        kg.evaluate_robustness(model, x, y[:-1], verbose=0)
    with pytest.raises(ValueError, match=r"integers in \[0, 3\)"):
        kg.evaluate_robustness(model, x, y + 3, verbose=0)
    flat = keras.Model(model.inputs, keras.layers.Flatten()(model.inputs[0])[:, :1])
    with pytest.raises(ValueError, match="class scores"):
        kg.evaluate_robustness(flat, x, y, verbose=0)


def test_images_with_nan_are_refused_naming_the_first():
    model, x, y, _, _ = _linear_problem()
    x = x.copy()
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf, the first at index 3"):
        kg.evaluate_robustness(model, x, y, verbose=0)


def test_labels_of_shape_n_1_give_the_same_report():
    model, x, y, _, _ = _linear_problem(seed=4)
    kwargs = dict(attacks=("fgm",), epsilons=(0.1,), settings=FAST, sanity_checks=False, verbose=0)
    flat = kg.evaluate_robustness(model, x, y, **kwargs)
    column = kg.evaluate_robustness(model, x, y[:, None], **kwargs)
    np.testing.assert_array_equal(column.distances, flat.distances)
    np.testing.assert_array_equal(column.lower_bounds, flat.lower_bounds)


def test_result_files_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    model, x, y, _, _ = _linear_problem(seed=7)
    report = kg.evaluate_robustness(model, x, y, attacks=("fgm",), epsilons=(0.1,), settings=FAST,
                                    sanity_checks=False, verbose=0)

    def fail(*args):
        raise KeyboardInterrupt

    from keras_gradreg import plotting

    monkeypatch.setattr(plotting, "plot_error_curves", fail)
    with pytest.raises(KeyboardInterrupt):
        kg.write_results([report], str(tmp_path))
    assert os.listdir(tmp_path) == []  # neither the JSON nor the CSV written before it


def test_dataset_input_and_files_table_and_plot(tmp_path):
    model, x, y, _, _ = _linear_problem(seed=7)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    reports = [kg.evaluate_robustness(model, data, attacks=("fgm", "pgd"), epsilons=(0.05, 0.1),
                                      settings=FAST, sanity_checks=False, verbose=0, name=name,
                                      training_time=36.0)
               for name in ("a", "b")]
    assert len(reports[0].distances) == len(x)
    table = kg.format_table(reports)
    assert "% error at 0.05" in table and "  0.01  " in table  # 36 s = 0.01 h
    paths = kg.write_results(reports, str(tmp_path / "out"))
    loaded = json.load(open(paths["json"]))
    assert loaded[0]["error_at"]["0.1"] == reports[0].error_at(0.1)
    assert len(loaded[0]["images"]["distance"]) == len(x)
    rows = list(csv.DictReader(open(paths["csv"])))
    assert [r["model"] for r in rows] == ["a", "b"]
    assert float(rows[0]["error_at_0.05"]) == pytest.approx(reports[0].error_at(0.05))
    assert os.path.getsize(paths["plot"]) > 1000
    before = open(paths["json"]).read()
    with pytest.raises(FileExistsError, match="overwrite"):
        kg.write_results(reports[:1], str(tmp_path / "out"))
    assert open(paths["json"]).read() == before
    kg.write_results(reports[:1], str(tmp_path / "out"), overwrite=True)
    assert len(json.load(open(paths["json"]))) == 1


@pytest.fixture(scope="module")
def trained_cnn():
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = kg.load_offline_mnist()
    model = kg.architectures.small_cnn((28, 28, 1), 10)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, batch_size=128, epochs=2, verbose=0)
    return model, x_test, y_test


def test_a_trained_cnn_on_mnist_digits(trained_cnn, tmp_path):
    """Error grows with epsilon to 100 %, and the L-bound stays below the attacks' distances."""
    model, x, y = trained_cnn
    report = kg.evaluate_robustness(model, x, y, num_images=60, epsilons=(0.05, 0.1, 0.2, 1.0),
                                    settings=FAST, verbose=0)
    errors = [report.error_at(e) for e in report.epsilons]
    assert errors == sorted(errors) and errors[0] > report.clean_error and errors[-1] == 1.0
    assert report.clean_error < 0.3
    assert all(c.passed for c in report.checks), report.checks
    correct = report.distances > 0
    below = report.lower_bounds[correct] <= report.distances[correct]
    assert below.mean() >= 0.95
    paths = kg.write_results([report], str(tmp_path))
    assert json.load(open(paths["json"]))[0]["num_images"] == 60


def test_error_at_counts_only_the_images_asked_for_and_refuses_unevaluated_ones():
    # images 2, 5, 7 and 9 of the data were evaluated, with these distances
    report = kg.RobustnessReport(
        name="m", attack_norm="linf", epsilons=(0.1,), distances=np.array([0.0, 0.05, 0.2, np.inf]),
        best_attack=np.array(["clean", "pgd", "pgd", "none"]), attack_distances={},
        adversarial=np.zeros((4, 1)), indices=np.array([2, 5, 7, 9]), search_tolerance=0.0,
        checks=[])
    assert report.error_at(0.1) == 0.5
    assert report.error_at(0.1, images=[7, 9]) == 0.0
    assert report.error_at(0.1, images=[2, 5]) == 1.0
    with pytest.raises(ValueError, match=r"first: \[3\]"):
        report.error_at(0.1, images=[3, 7])
    with pytest.raises(ValueError, match="no image"):
        report.error_at(0.1, images=[])


@pytest.mark.parametrize("tty,interval", [(True, 0.05), (False, kg.evaluation.LOG_INTERVAL)])
def test_progress_is_live_on_a_terminal_and_a_line_every_few_seconds_in_a_log(monkeypatch, tty,
                                                                            interval):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: tty)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    bar = kg.evaluation.progress_bar(7, 1, "attack batch")
    assert (bar.target, bar.interval, bar.unit_name) == (7, interval, "attack batch")
    assert bar._dynamic_display == tty  # a log gets new lines, not backspaces
    monkeypatch.setitem(sys.modules, "ipykernel", sys)  # a notebook: not a terminal, but live
    assert kg.evaluation.progress_bar(7, 1, "attack batch")._dynamic_display


def test_progress_in_a_log_is_plain_text(monkeypatch, capsys):
    """Keras writes bold and colour codes into its bar whatever the output; a log gets
    the same line without them."""
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    bar = kg.evaluation.progress_bar(7, 1, "attack batch")
    bar.add(3)
    shown = capsys.readouterr().out
    assert "3/7" in shown and "━━━━━━━━·" in shown and "·━" not in shown  # done, then to go
    bar.add(4)
    shown = capsys.readouterr().out
    assert "7/7" in shown and "attack batch" in shown and "·" not in shown
    assert "\x1b" not in shown
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    kg.evaluation.progress_bar(7, 1, "attack batch").add(7)
    assert "\x1b[" in capsys.readouterr().out  # what a terminal gets, and a log did before


def test_each_attack_is_compiled_once_per_model_and_the_model_is_not_kept_alive():
    """A second evaluation of the same model (another protocol, another radius) traces
    nothing new; the compiled functions go when the model goes."""
    import gc
    import weakref

    model, x, y, _, _ = _linear_problem(seed=12, n=20, classes=4)
    kwargs = dict(attacks=("apgd_ce", "fab_t"), epsilons=(0.05, 0.1), settings=FAST,
                  lower_bound=False, verbose=0)
    kg.evaluate_robustness(model, x, y, **kwargs)
    kg.evaluate_autoattack(model, x, y, epsilons=[0.05, 0.1], budget=kg.autoattack.SEARCH_BUDGET,
                           verbose=0)

    def compiled(of):
        """{attack: [each of its graphs' tracing counts]}"""
        return {key: [f.experimental_get_tracing_count() for graphs in per_shape.values()
                      for f in graphs.values()]
                for key, per_shape in kg.evaluation.compiled_for(of).items()
                if isinstance(per_shape, dict)}

    first = compiled(model)
    kg.evaluate_robustness(model, x, y, **dict(kwargs, epsilons=(0.02, 0.2)))
    kg.evaluate_autoattack(model, x, y, epsilons=0.2, budget=kg.autoattack.SEARCH_BUDGET,
                           seed=3, verbose=0)
    again = compiled(model)
    # apgd_ce, fab_t and square (the masking check's) serve both protocols at this budget,
    # beside the two PGDs of the checks and the cascade's apgd_t: none is built twice,
    # each graph traced once, at most two a shape (the first batch size met, then any)
    assert again.keys() == first.keys() and len(first) == 6
    assert all(counts == [1] * len(counts) and len(counts) <= 2 for counts in again.values())
    held = weakref.ref(model)
    del model
    gc.collect()
    assert held() is None


class _Count:
    """A progress bar that only counts."""

    def __init__(self):
        self.done = 0

    def add(self, count):
        self.done += count


def _no_gpu(monkeypatch):
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])


def test_batches_run_two_at_a_time_and_come_back_in_order(monkeypatch):
    _no_gpu(monkeypatch)  # the default on a machine without a GPU, wherever this runs
    assert progress_lib.workers() == 2
    both = threading.Barrier(2, timeout=20)  # broken unless batches 0 and 1 overlap

    def attack(batch):
        if batch[0] < 6:
            both.wait()
        time.sleep(0.05 * (batch[0] % 2 == 0))  # odd batches finish first
        return batch * 10

    progress = _Count()
    got = list(progress_lib.in_batches(attack, np.arange(11), 3, progress))
    assert [list(idx) for idx, _ in got] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10]]
    assert all(np.array_equal(result, idx * 10) for idx, result in got)
    assert progress.done == 4


def test_one_batch_at_a_time_where_tensorflow_sees_a_gpu_unless_told(monkeypatch):
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: ["GPU:0"] if kind == "GPU" else [])
    assert progress_lib.workers() == 1
    threads = set()
    list(progress_lib.in_batches(lambda b: threads.add(threading.get_ident()), np.arange(3), 1,
                                 _Count()))
    assert threads == {threading.get_ident()}  # the caller's, as before 0.6.2
    for bad in (0, 1.5, "2", True):
        monkeypatch.setattr(progress_lib, "WORKERS", bad)
        with pytest.raises(ValueError, match=f"WORKERS={bad!r} must be None or a whole"):
            progress_lib.workers()
    monkeypatch.setattr(progress_lib, "WORKERS", 3)
    assert progress_lib.workers() == 3
    three = threading.Barrier(3, timeout=20)  # broken unless batches 0, 1 and 2 overlap
    got = list(progress_lib.in_batches(lambda b: three.wait() if b[0] < 3 else None,
                                       np.arange(5), 1, _Count()))
    assert [int(idx[0]) for idx, _ in got] == [0, 1, 2, 3, 4]


def test_an_error_in_a_batch_is_raised_and_no_later_batch_starts(monkeypatch):
    monkeypatch.setattr(progress_lib, "WORKERS", 2)
    started = []

    def attack(batch):
        started.append(int(batch[0]))
        if batch[0] == 0:
            time.sleep(0.2)  # batch 1 runs meanwhile
            raise ValueError("batch 0 failed")
        return batch

    with pytest.raises(ValueError, match="batch 0 failed"):
        list(progress_lib.in_batches(attack, np.arange(10), 1, _Count()))
    assert sorted(started) == [0, 1]


def test_batches_attacked_two_at_a_time_give_the_results_of_one_at_a_time(trained_cnn,
                                                                          monkeypatch):
    """Both protocols, with random starts (APGD, Square) and FAB's memory, bit for bit."""
    model, x, y = trained_cnn
    budget = kg.AutoAttackBudget(apgd_steps=10, target_classes=3, fab_steps=10,
                                 square_queries=100)

    def evaluate():
        report = kg.evaluate_robustness(model, x, y, num_images=40, epsilons=(0.05, 0.1),
                                        attacks=("apgd_ce", "fab_t"), batch_size=8,
                                        settings=dataclasses.replace(FAST, autoattack=budget),
                                        lower_bound=False, verbose=0)
        cascade = kg.evaluate_autoattack(model, x, y, num_images=40, epsilons=(0.05, 0.1),
                                         batch_size=8, budget=budget, verbose=0)
        return report, cascade

    monkeypatch.setattr(progress_lib, "WORKERS", 2)  # also on a machine with a GPU
    together = evaluate()
    monkeypatch.setattr(progress_lib, "WORKERS", 1)
    alone = evaluate()
    np.testing.assert_array_equal(together[0].distances, alone[0].distances)
    np.testing.assert_array_equal(together[0].adversarial, alone[0].adversarial)
    assert [c.value for c in together[0].checks] == [c.value for c in alone[0].checks]
    assert 0 < together[0].error_at(0.1) < 1  # something to compare
    for a, b in zip(together[1], alone[1]):
        np.testing.assert_array_equal(a.broken_by, b.broken_by)
        np.testing.assert_array_equal(a.adversarial, b.adversarial)
