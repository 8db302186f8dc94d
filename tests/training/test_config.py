"""TrainConfig: one word per setting, the old names still taken, and the settings of runs
saved by 0.6.3 matched by today's configs."""

import json
import os

import pytest

from keras_gradreg import training

SAVED = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "saved_by_0.6.3")


@pytest.mark.parametrize("method,config", [
    ("fgsm_at", dict(method="fgsm_rs", attack_norm="l2", epsilon=1.0,
                     regularizer="gradient_penalty", regularizer_weight=1.0, h=0.5)),
    ("pgd_at", dict(method="pgd_at", attack_steps=3)),
    ("free_at", dict(method="free_at", replays=2)),
    ("gradreg", dict(method="gradreg", attack_norm="l2"))])
def test_the_settings_of_a_run_of_0_6_3_match_todays_config_of_it(method, config):
    """settings.json of 0.6.3 (at_epsilon, at_norm, fgsm_at, ...) read with today's names:
    such a run is resumed or reused, not refused as one of other settings."""
    with open(os.path.join(SAVED, f"settings_{method}.json")) as f:
        stored = json.load(f)
    today = training.settings(training.check_config(training.TrainConfig(model_dir="", **config)))
    assert training.upgrade_settings(stored) == today  # renamed, and the fields added since


def test_a_method_takes_its_default_steps_and_stores_only_what_it_uses():
    pgd = training.check_config(training.TrainConfig(model_dir="", method="pgd_at"))
    trades = training.check_config(training.TrainConfig(model_dir="", method="trades"))
    assert (pgd.attack_steps, trades.attack_steps) == (7, 10)
    assert "trades_beta" in training.settings(trades) and "trades_beta" not in training.settings(pgd)
    plain = training.settings(training.TrainConfig(model_dir="", method="plain"))
    assert not {"attack_norm", "epsilon", "penalty_weight", "regularizer"} & set(plain)


def test_the_devices_a_run_trains_on_are_not_among_its_settings():
    """Every strategy gives one device's weights (tests/distribution), so a run trained on
    several GPUs, or JAX processes, resumes or is reused on one, and the other way."""
    one = training.settings(training.TrainConfig(model_dir=""))
    assert training.settings(training.TrainConfig(model_dir="", strategy="mirrored")) == one
    assert "strategy" not in one
    assert training.upgrade_settings(dict(one, strategy="data_parallel")) == one  # before 0.7


def test_the_unsquared_penalty_stores_its_radius_and_the_squared_one_stores_neither():
    """penalty_power 1 is scaled by epsilon, which is then a setting of the run; a run
    saved before 0.8, without the new fields, reads as one at their defaults."""
    unsquared = training.check_config(training.TrainConfig(
        model_dir="", method="gradreg", penalty_power=1, clean_weight=0.8, epsilon=0.1))
    stored = training.settings(unsquared)
    assert (stored["penalty_power"], stored["clean_weight"], stored["epsilon"]) == (1, 0.8, 0.1)
    assert "ramp_epochs" not in stored
    squared = training.settings(training.check_config(training.TrainConfig(model_dir="")))
    assert (squared["penalty_power"], squared["clean_weight"]) == (2, 1.0)
    assert "epsilon" not in squared
    assert not {"penalty_power", "clean_weight"} & set(training.settings(training.check_config(
        training.TrainConfig(model_dir="", method="pgd_at", penalty_power=1))))
    older = {k: v for k, v in squared.items() if k not in ("penalty_power", "clean_weight")}
    assert training.upgrade_settings(older) == squared  # runs of 0.7 are reused


@pytest.mark.parametrize("fields,match", [
    (dict(penalty_power=3), "penalty_power=3"),
    (dict(clean_weight=0.0), "clean_weight=0.0"),
    (dict(penalty_power=1, epsilon=0.0), "epsilon=0.0"),
    (dict(activation="gelu2"), "activation='gelu2'"),
])
def test_bad_penalty_settings_are_named_before_any_work(fields, match):
    with pytest.raises(ValueError, match=match):
        training.check_config(training.TrainConfig(model_dir="", method="gradreg", **fields))


def test_the_unsquared_penalty_builds_with_the_runs_radius():
    config = training.check_config(training.TrainConfig(
        model_dir="", method="double_backprop", penalty_power=1, clean_weight=0.8, epsilon=0.2,
        activation="gelu"))
    model = training.build(config)
    assert (model.penalty_power, model.epsilon, model.clean_weight) == (1, 0.2, 0.8)
    assert model.estimator == "double_backprop"
    assert model.layers[1].get_config()["activation"] == "gelu"
