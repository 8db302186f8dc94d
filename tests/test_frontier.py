"""The cost-robustness frontier: the grid, the Pareto set, a tiny run end to end that
resumes without retraining, and its files."""

import dataclasses
import json
import os

import numpy as np
import pytest

import keras_gradreg as kg
import regimes
from keras_gradreg import frontier
from keras_gradreg import training

TINY_BUDGET = kg.AutoAttackBudget(apgd_steps=5, target_classes=2, fab_steps=5,
                                             square_queries=20)
"""The frontier tests check what is trained, attacked, stored and reused, not AutoAttack's
strength (tests/attacks/ do): the cascade on a small budget."""


def test_pareto_optimal_points_are_those_no_other_point_beats_in_time_and_error():
    times = [1.0, 2.0, 3.0, 0.5, 2.0, 4.0]
    errors = [0.5, 0.4, 0.45, 0.9, 0.4, 0.1]
    # (3, 0.45) is beaten by (2, 0.4); the two equal points (2, 0.4) do not beat each other
    np.testing.assert_array_equal(frontier.pareto_optimal(times, errors),
                                  [True, True, False, True, True, True])


def test_the_grids_hold_every_method_with_its_own_budget():
    base = training.TrainConfig(model_dir="", epochs=10, ramp_epochs=5, replays=4)
    small = {e.name: e.settings for e in frontier.grid(base)}
    assert list(small) == ["plain", "gradreg lambda=10 k=1", "gradreg lambda=10 k=4",
                           "gradreg lambda=30 k=1", "gradreg lambda=30 k=4", "fgsm_rs",
                           "free_at m=4", "pgd_at 3 steps", "pgd_at 7 steps"]
    assert small["free_at m=4"] == dict(method="free_at", epochs=3, ramp_epochs=2)
    assert small["pgd_at 3 steps"] == dict(method="pgd_at", attack_steps=3)
    full = frontier.grid(base, frontier.FULL_GRID)
    assert sum(e.settings["method"] == "gradreg" for e in full) == 12
    chosen = frontier.grid(base, dict(penalty_weight=[100], penalty_every=[1, 8], pgd_steps=[5]))
    assert [e.name for e in chosen if e.settings["method"] in ("gradreg", "pgd_at")] == [
        "gradreg lambda=100 k=1", "gradreg lambda=100 k=8", "pgd_at 5 steps"]
    cheap = [frontier.Entry("n_fgsm", dict(method="n_fgsm")),
             frontier.Entry("free", dict(method="free_at", regularizer="none"))]
    mine = frontier.grid(dataclasses.replace(base, epochs=7, ramp_epochs=3), cheap=cheap)
    assert [e.name for e in mine][5:7] == ["n_fgsm", "free m=4"]
    assert mine[6].settings == dict(method="free_at", regularizer="none", epochs=2,
                                    ramp_epochs=1)


@pytest.mark.parametrize("name", sorted(regimes.REGIMES))
def test_every_regime_plans_valid_runs_with_its_trained_radius_among_its_radii(name, tmp_path):
    regime = regimes.REGIMES[name]
    entries, configs, radii = frontier.plan(regime.base(), str(tmp_path), epsilon=regime.epsilon,
                                            epsilons=regime.epsilons, seeds=regime.seeds,
                                            sizes=regime.sizes, cheap=regime.cheap)
    assert regime.epsilon in radii and list(radii) == sorted(regime.epsilons)
    assert len(configs) == len(entries) * len(regime.seeds)
    for config in configs.values():  # every run trains, and is judged, in the regime's norm
        assert config.attack_norm == regime.attack_norm
        assert config.epsilon == regime.epsilon
        assert config.dataset == regime.settings.get("dataset", "offline_mnist")
    activations = {config.activation for config in configs.values()}
    assert regime.settings["activation"] in activations <= {"relu", "smooth_relu", "gelu"}
    assert not os.listdir(tmp_path)  # planning builds nothing


def test_the_fashion_regime_runs_every_method_on_the_whole_fashion_mnist():
    regime = regimes.REGIMES["fashion"]
    entries = frontier.grid(regime.base(), regime.sizes, regime.cheap)
    methods = {e.settings["method"] for e in entries}
    assert methods == {"plain", "gradreg", "fgsm_rs", "n_fgsm", "trades", "pgd_at"}
    smooth = [e for e in entries if e.settings.get("activation") == "smooth_relu"]
    assert {e.settings["penalty_every"] for e in smooth} == {1, 4}  # lazy and not
    assert regime.base().dataset == "fashion_mnist" and regime.num_images >= 500
    assert len(regime.seeds) == 3 and regime.epsilons == (0.1, 0.2)


def test_the_fashion_smooth_regime_runs_both_powers_of_the_penalty_beside_fast_training():
    """GELU throughout; the squared and the unsquared penalty lazy and not, the unsquared
    by double backprop too and at h = epsilon (FGSM without a random start)."""
    regime = regimes.REGIMES["fashion_smooth"]
    entries = frontier.grid(regime.base(), regime.sizes, regime.cheap)
    methods = {e.settings["method"] for e in entries}
    assert methods == {"plain", "gradreg", "double_backprop", "fgsm_rs", "n_fgsm", "pgd_at"}
    assert regime.base().activation == "gelu" and regime.base().dataset == "fashion_mnist"
    penalties = [e.settings for e in entries if e.settings["method"] == "gradreg"]
    assert {(p.get("penalty_power", 2), p["penalty_every"]) for p in penalties} == {
        (2, 1), (2, 4), (1, 1), (1, 4)}
    assert {p["h"] for p in penalties if p.get("penalty_power") == 1} == {0.03, regime.epsilon}
    exact = [e.settings for e in entries if e.settings["method"] == "double_backprop"]
    assert [p["penalty_power"] for p in exact] == [1]
    assert len(regime.seeds) == 3 and regime.epsilons == (0.1, 0.2) and regime.num_images == 500


def test_the_collapse_regime_runs_each_single_step_method_and_regulariser():
    cheap = regimes.REGIMES["collapse"].cheap
    assert {e.settings["method"] for e in cheap} == {"fgsm_rs", "n_fgsm"}
    assert {e.settings.get("regularizer", "none") for e in cheap} == set(
        kg.regularizers.NAMES) - {"trades"}


def test_a_point_averages_its_seeds_per_radius_and_counts_each_failure():
    rows = [dict(train_seconds=10.0, epoch_seconds=1.0, clean_error=0.02, robust_errors=[0.2, 0.5],
                 catastrophic_overfitting=False),
            dict(train_seconds=14.0, epoch_seconds=1.4, clean_error=0.04, robust_errors=[0.4, 1.0],
                 catastrophic_overfitting=True),
            dict(train_seconds=12.0, epoch_seconds=1.2, clean_error=0.9, robust_errors=[1.0, 1.0],
                 catastrophic_overfitting=False)]
    entry = frontier.Entry("e", dict(method="fgsm_rs", regularizer="grad_align"))
    point = frontier._point(entry, rows, (0, 1, 2), (0.1, 0.3), trained=1)
    assert point.robust_errors == pytest.approx((1.6 / 3, 2.5 / 3))
    assert point.robust_error == pytest.approx(2.5 / 3) and point.robust_spread == pytest.approx(0.5)
    assert point.clean_error == pytest.approx(0.32) and point.clean_spread == pytest.approx(0.88)
    assert point.train_seconds == 12.0 and point.seconds_spread == 4.0
    assert (point.catastrophic_overfitting, point.never_learned) == (1, 1)
    assert point.regularizer == "grad_align" and point.epsilons == (0.1, 0.3)
    table = frontier.format_frontier([point], 0.3, 200)
    assert "% robust at 0.1" in table and "% robust at 0.3 (trained)" in table
    assert "1 / 1 of 3" in table and "83.3" in table and "53.3" in table


@pytest.mark.parametrize("sizes,match", [
    (dict(penalty_weight=[0], penalty_every=[1], pgd_steps=[3]), "penalty_weight=0"),
    (dict(penalty_weight=[1], penalty_every=[0.5], pgd_steps=[3]), "penalty_every=0.5"),
    (dict(penalty_weight=[1], penalty_every=[1], pgd_steps=[]), r"pgd_steps=\[\]"),
    (dict(penalty_weight=[1, 1.0], penalty_every=[1], pgd_steps=[3]), "repeats"),
    (dict(penalty_weight=[1], penalty_every=[1]), "pgd_steps"),
])
def test_bad_grid_sizes_are_named(sizes, match):
    with pytest.raises(ValueError, match=match):
        frontier.grid(training.TrainConfig(model_dir=""), sizes)


@pytest.fixture
def tiny_grid(monkeypatch):
    monkeypatch.setattr(frontier, "SMALL_GRID", {"penalty_weight": (10.0,), "penalty_every": (2,),
                                                 "pgd_steps": (2,)})
    return training.TrainConfig(model_dir="", epochs=2, batch_size=64, train_limit=128, h=0.1,
                                epsilon=0.1, ramp_epochs=1, replays=2)


def test_a_tiny_frontier_trains_evaluates_resumes_and_writes_its_files(tiny_grid, tmp_path,
                                                                        monkeypatch):
    out = str(tmp_path / "frontier")
    quick = dict(epsilon=0.1, epsilons=(0.2, 0.1), num_images=8, seeds=(0,),
                 budget=TINY_BUDGET, verbose=0)
    points = frontier.run_frontier(tiny_grid, out, **quick)
    assert [p.name for p in points] == ["plain", "gradreg lambda=10 k=2", "fgsm_rs", "free_at m=2",
                                        "pgd_at 2 steps"]
    assert all(p.train_seconds > 0 and 0 <= p.robust_error <= 1 for p in points)
    assert all(p.epsilons == (0.1, 0.2) and p.robust_error == p.robust_errors[0] for p in points)
    # every model is judged at each radius; a larger ball breaks at least as many images
    assert all(p.clean_error <= p.robust_errors[0] <= p.robust_errors[1] for p in points)
    free = next(p for p in points if p.method == "free_at")
    assert free.train_seconds == pytest.approx(free.epoch_seconds * 1)  # ceil(2 / 2) epochs
    best = [p for p in points if p.pareto]
    assert best and all(not any(q.train_seconds <= p.train_seconds and q.robust_error < p.robust_error
                                for q in points) for p in best)
    evaluations = sorted(os.listdir(os.path.join(out, "evaluations")))
    assert len(evaluations) == 5
    stored = json.load(open(os.path.join(out, "evaluations", evaluations[0])))
    assert stored["epsilons"] == [0.1, 0.2] and stored["num_images"] == 8
    assert stored["attack_norm"] == "linf"

    # Again: every run and evaluation is reused, nothing is trained or attacked.
    def refuse(*args, **kwargs):
        raise AssertionError("retrained or re-evaluated")

    monkeypatch.setattr(training, "train", refuse)
    monkeypatch.setattr(kg.evaluation, "evaluate_autoattack", refuse)
    again = frontier.run_frontier(tiny_grid, out, **quick)
    assert [dataclasses.asdict(p) for p in again] == [dataclasses.asdict(p) for p in points]

    paths = frontier.write_frontier(points, out, 0.1)
    assert json.load(open(paths["json"]))["points"][0]["name"] == "plain"
    assert frontier.read_frontier(paths["json"]) == (points, 0.1, "linf")
    assert os.path.getsize(paths["plot"]) > 1000
    with pytest.raises(FileExistsError, match="overwrite"):
        frontier.write_frontier(points, out, 0.1)
    table = frontier.format_frontier(points, 0.1, 8)
    assert "% robust at 0.1 (trained)" in table and "pgd_at 2 steps" in table


def test_an_l2_frontier_trains_and_attacks_in_l2(tmp_path):
    base = training.TrainConfig(model_dir="", epochs=1, batch_size=64, train_limit=128, h=0.5,
                                epsilon=1.0, attack_norm="l2", ramp_epochs=0)
    out = str(tmp_path / "l2")
    points = frontier.run_frontier(
        base, out, epsilon=1.0, epsilons=(1.0, 2.0), num_images=8, seeds=(0,),
        sizes=dict(penalty_weight=[10], penalty_every=[1], pgd_steps=[1]),
        cheap=[frontier.Entry("fgsm_rs", dict(method="fgsm_rs"))],
        budget=TINY_BUDGET, verbose=0)
    assert [p.name for p in points] == ["plain", "gradreg lambda=10 k=1", "fgsm_rs", "pgd_at 1 steps"]
    for name in ("gradreg_lambda_10_k_1", "fgsm_rs", "pgd_at_1_steps"):
        path = os.path.join(out, "runs", f"{name}-s0", training.SETTINGS_FILE)
        assert json.load(open(path))["attack_norm"] == "l2"
    stored = json.load(open(os.path.join(out, "evaluations", "plain-s0.json")))
    assert stored["attack_norm"] == "l2" and stored["epsilons"] == [1.0, 2.0]
    assert all(p.robust_errors[0] <= p.robust_errors[1] for p in points)
    paths = frontier.write_frontier(points, out, 1.0, attack_norm="l2")
    assert json.load(open(paths["json"]))["attack_norm"] == "l2"


def test_a_frontier_of_bad_settings_fails_before_any_training(tiny_grid, tmp_path):
    with pytest.raises(ValueError, match="epsilon=2.0"):
        frontier.run_frontier(dataclasses.replace(tiny_grid, epsilon=2.0), str(tmp_path),
                              epsilon=0.1, num_images=8, seeds=(0,), verbose=0)
    with pytest.raises(ValueError, match="epsilon=1.5"):
        frontier.run_frontier(tiny_grid, str(tmp_path), epsilon=1.5, num_images=8, seeds=(0,),
                              verbose=0)
    with pytest.raises(ValueError, match=r"epsilon=0.1 must be one of epsilons=\[0.2, 0.3\]"):
        frontier.run_frontier(tiny_grid, str(tmp_path), epsilon=0.1, epsilons=(0.3, 0.2),
                              num_images=8, seeds=(0,), verbose=0)
    with pytest.raises(ValueError, match="repeats a radius"):
        frontier.run_frontier(tiny_grid, str(tmp_path), epsilon=0.1, epsilons=(0.1, 0.1),
                              num_images=8, seeds=(0,), verbose=0)
    with pytest.raises(ValueError, match=r"seeds=\[0, 0\]"):
        frontier.run_frontier(tiny_grid, str(tmp_path), epsilon=0.1, num_images=8, seeds=(0, 0),
                              verbose=0)
    assert not os.path.exists(tmp_path / "runs")


def test_progress_names_the_run_the_elapsed_and_the_remaining_time():
    assert kg.frontier._progress_text(0.0, 0, 10) == "elapsed 0:00"
    assert kg.frontier._progress_text(125.0, 5, 10) == "elapsed 2:05, about 2:05 left"
    assert kg.frontier._progress_text(60.0, 3, 4) == "elapsed 1:00, about 0:20 left"


def test_a_frontier_file_of_0_6_3_reads_with_todays_names():
    saved = os.path.join(os.path.dirname(__file__), "data", "saved_by_0.6.3", "frontier.json")
    points, epsilon, norm = frontier.read_frontier(saved)
    assert (epsilon, norm) == (0.1, "linf") and points[0].epsilons == (0.1, 0.2)
    assert "fgsm_at" in frontier.format_frontier(points, epsilon, 500)


def test_the_old_radii_argument_warns_and_means_epsilons(tiny_grid, tmp_path):
    with pytest.warns(DeprecationWarning, match="`radii` is renamed `epsilons`"), \
            pytest.raises(ValueError, match=r"epsilon=0.1 must be one of epsilons=\[0.3\]"):
        frontier.run_frontier(tiny_grid, str(tmp_path), epsilon=0.1, radii=(0.3,), num_images=8,
                              seeds=(0,), verbose=0)


def test_the_plot_names_every_point_in_a_legend_and_rings_the_recommended(monkeypatch, tmp_path):
    """No label is printed over the points (the 0.6 plots' overlap): each configuration
    is named once, in the figure's legend; the recommended one is ringed in both panels."""
    import matplotlib.figure

    saved = os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "data",
                         "frontier_collapse.json")
    points, epsilon, norm = frontier.read_frontier(saved)
    drawn = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda figure, path, **kwargs: drawn.append(figure))
    frontier.draw_frontier(points, epsilon, str(tmp_path / "f.png"), norm, "pgd_at 3 steps")
    (figure,) = drawn
    assert all(not axis.texts for axis in figure.axes)
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == [p.name for p in points]
    recommended = next(p for p in points if p.name == "pgd_at 3 steps")
    for axis, error in zip(figure.axes[:2], (recommended.robust_error, recommended.clean_error)):
        rings = [line for line in axis.lines if line.get_markersize() > 15]
        assert [(line.get_xdata()[0], line.get_ydata()[0]) for line in rings] == [
            (recommended.train_seconds, 100 * error)]
    drawn.clear()
    frontier.draw_frontier(points, epsilon, str(tmp_path / "f.png"), norm, "not a point")
    assert not [line for axis in drawn[0].axes for line in axis.lines if line.get_markersize() > 15]
