"""The radius search: a warm start finds the cold distance in fewer runs, or gives up below it."""

import types

import numpy as np
import pytest

from keras_gradreg.evaluation import epsilon_search

pytestmark = pytest.mark.every_backend


def _threshold_attack(thresholds):
    """A synthetic attack (and its judge) on 1-pixel images 0 whose label i is its index: it breaks image i
    exactly at radii >= thresholds[i], by a perturbation of norm epsilon. Counts its runs."""
    runs = np.zeros(len(thresholds), int)

    def attack(x, y, epsilon):
        runs[y] += 1
        return x + np.where(epsilon >= thresholds[y], epsilon, 0.0)[:, None]

    def verify(x_adv, x, y):
        return x_adv[:, 0] >= thresholds[y], np.abs(x_adv - x).max(axis=1)

    return attack, types.SimpleNamespace(verify=verify), runs


def test_a_warm_started_search_finds_the_cold_distance_in_fewer_runs_or_gives_up_below_it():
    thresholds = np.array([0.07, 0.1, 0.27, 0.5])
    x, y = np.zeros((4, 1)), np.arange(4)
    tolerance = 2.0 ** -10
    attack, judge, runs = _threshold_attack(thresholds)
    cold, _, cold_width = epsilon_search.search(attack, judge, x, y, 1.0, 12, tolerance)
    cold_runs = runs.copy()
    # starts a little above, far above (4x: the geometric phase takes over) and below
    start = thresholds * np.array([1.02, 1.03, 4.0, 0.98])
    runs[:] = 0
    warm, examples, width = epsilon_search.search(attack, judge, x, y, 1.0, 12, tolerance, start)
    for found, w in ((cold[:3], cold_width[:3]), (warm[:3], width[:3])):
        assert np.all(found >= thresholds[:3])
        assert np.all(found <= thresholds[:3] * (1 + w + 1e-12))
    assert np.all(width[:2] <= tolerance) and np.all(cold_width <= 0.003)
    assert warm[3] == np.inf and examples[3, 0] == 0.0  # not broken at its start: given up
    # near the threshold: the start, 15/16 of it, then 7 halvings of the 1/16 bracket
    np.testing.assert_array_equal(runs, [9, 9, runs[2], 1])
    assert np.all(cold_runs == 13) and runs[2] <= 13
