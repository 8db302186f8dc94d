"""The cost-robustness frontier: the grid, the Pareto set, a tiny run end to end that
resumes without retraining, and its files."""

import dataclasses
import json
import os

import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg import frontier
from keras_gradreg import training


def test_pareto_optimal_points_are_those_no_other_point_beats_in_time_and_error():
    times = [1.0, 2.0, 3.0, 0.5, 2.0, 4.0]
    errors = [0.5, 0.4, 0.45, 0.9, 0.4, 0.1]
    # (3, 0.45) is beaten by (2, 0.4); the two equal points (2, 0.4) do not beat each other
    np.testing.assert_array_equal(frontier.pareto_optimal(times, errors),
                                  [True, True, False, True, True, True])


def test_the_grids_hold_every_method_with_its_own_budget():
    base = training.TrainConfig(model_dir="", epochs=10, at_ramp_epochs=5, free_replays=4)
    small = {e.name: e.settings for e in frontier.grid(base)}
    assert list(small) == ["plain", "gradreg lambda=10 k=1", "gradreg lambda=10 k=4",
                           "gradreg lambda=30 k=1", "gradreg lambda=30 k=4", "fgsm_at",
                           "free_at m=4", "pgd_at 3 steps", "pgd_at 7 steps"]
    assert small["free_at m=4"] == dict(method="free_at", epochs=3, at_ramp_epochs=2)
    assert small["pgd_at 3 steps"] == dict(method="pgd_at", at_steps=3)
    full = frontier.grid(base, frontier.FULL_GRID)
    assert sum(e.settings["method"] == "gradreg" for e in full) == 12
    chosen = frontier.grid(base, dict(penalty_weight=[100], penalty_every=[1, 8], pgd_steps=[5]))
    assert [e.name for e in chosen if e.settings["method"] in ("gradreg", "pgd_at")] == [
        "gradreg lambda=100 k=1", "gradreg lambda=100 k=8", "pgd_at 5 steps"]


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
                                at_epsilon=0.1, at_ramp_epochs=1, free_replays=2)


def test_a_tiny_frontier_trains_evaluates_resumes_and_writes_its_files(tiny_grid, tmp_path,
                                                                        monkeypatch):
    out = str(tmp_path / "frontier")
    quick = dict(epsilon=0.1, num_images=8, seeds=(0,), budget=kg.autoattack.SEARCH_BUDGET,
                 verbose=0)
    points = frontier.run_frontier(tiny_grid, out, **quick)
    assert [p.name for p in points] == ["plain", "gradreg lambda=10 k=2", "fgsm_at", "free_at m=2",
                                        "pgd_at 2 steps"]
    assert all(p.train_seconds > 0 and 0 <= p.robust_error <= 1 for p in points)
    assert all(p.robust_error >= p.clean_error for p in points)
    free = next(p for p in points if p.method == "free_at")
    assert free.train_seconds == pytest.approx(free.epoch_seconds * 1)  # ceil(2 / 2) epochs
    best = [p for p in points if p.pareto]
    assert best and all(not any(q.train_seconds <= p.train_seconds and q.robust_error < p.robust_error
                                for q in points) for p in best)
    evaluations = sorted(os.listdir(os.path.join(out, "evaluations")))
    assert len(evaluations) == 5
    stored = json.load(open(os.path.join(out, "evaluations", evaluations[0])))
    assert stored["epsilon"] == 0.1 and stored["num_images"] == 8

    # Again: every run and evaluation is reused, nothing is trained or attacked.
    def refuse(*args, **kwargs):
        raise AssertionError("retrained or re-evaluated")

    monkeypatch.setattr(training, "train", refuse)
    monkeypatch.setattr(kg.evaluation, "evaluate_autoattack", refuse)
    again = frontier.run_frontier(tiny_grid, out, **quick)
    assert [dataclasses.asdict(p) for p in again] == [dataclasses.asdict(p) for p in points]

    paths = frontier.write_frontier(points, out, 0.1)
    assert json.load(open(paths["json"]))["points"][0]["name"] == "plain"
    assert os.path.getsize(paths["plot"]) > 1000
    with pytest.raises(FileExistsError, match="overwrite"):
        frontier.write_frontier(points, out, 0.1)
    table = frontier.format_frontier(points, 0.1, 8)
    assert "% robust error at 0.1" in table and "pgd_at 2 steps" in table


def test_a_frontier_of_bad_settings_fails_before_any_training(tiny_grid, tmp_path):
    with pytest.raises(ValueError, match="at_epsilon=2.0"):
        frontier.run_frontier(dataclasses.replace(tiny_grid, at_epsilon=2.0), str(tmp_path),
                              epsilon=0.1, num_images=8, seeds=(0,), verbose=0)
    with pytest.raises(ValueError, match="epsilon=1.5"):
        frontier.run_frontier(tiny_grid, str(tmp_path), epsilon=1.5, num_images=8, seeds=(0,),
                              verbose=0)
    with pytest.raises(ValueError, match=r"seeds=\[0, 0\]"):
        frontier.run_frontier(tiny_grid, str(tmp_path), epsilon=0.1, num_images=8, seeds=(0, 0),
                              verbose=0)
    assert not os.path.exists(tmp_path / "runs")


def test_progress_names_the_run_the_elapsed_and_the_remaining_time():
    assert kg.frontier._progress_text(0.0, 0, 10) == "elapsed 0:00"
    assert kg.frontier._progress_text(125.0, 5, 10) == "elapsed 2:05, about 2:05 left"
    assert kg.frontier._progress_text(60.0, 3, 4) == "elapsed 1:00, about 0:20 left"
