"""Every rename of the deprecation table: old names warn and mean the new ones (or fail
naming the new one where their meaning changed), and what 0.6.3 saved still loads."""

import os
import warnings

import keras
import numpy as np
import pytest

from helpers import batch
from helpers import linear_classifier
import keras_gradreg as kg

SAVED = os.path.join(os.path.dirname(__file__), "data", "saved_by_0.6.3")
CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.mark.parametrize("name,cls,settings", [
    ("gradreg", kg.GradRegModel, dict(estimator="double_backprop", attack_norm="linf",
                                      penalty_every=2)),
    ("pgd_at", kg.AdversarialTrainingModel, dict(attack="pgd", steps=2, seed=3)),
    ("single_step_elle_a", kg.AdversarialTrainingModel,
     dict(attack="n_fgsm", regularizer="adaptive_local_linearity", regularizer_weight=5.0)),
    ("free_at", kg.FreeAdversarialTrainingModel, dict(replays=2, attack_norm="linf"))])
def test_models_saved_by_0_6_3_load_with_their_settings_and_predictions(name, cls, settings):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: not even of skipped weights
        model = keras.models.load_model(os.path.join(SAVED, f"{name}.keras"))
    assert isinstance(model, cls)
    for key, value in settings.items():
        assert getattr(model, key) == value, key
    saved = np.load(os.path.join(SAVED, "predictions.npz"))
    np.testing.assert_array_equal(model.predict(saved["x"], verbose=0), saved[name])
    model.fit(saved["x"], np.zeros(len(saved["x"]), int), verbose=0)  # and trains on


def test_renamed_arguments_warn_and_mean_the_new_ones():
    with pytest.warns(DeprecationWarning, match="`method` is renamed `estimator`"):
        model = kg.GradRegModel.from_model(linear_classifier(), method="double_backprop",
                                           attack_norm="l2")
    assert model.estimator == "double_backprop"
    x, y = batch()
    with pytest.warns(DeprecationWarning, match="`method` is renamed `estimator`"):
        old = kg.input_gradient_penalty(linear_classifier(), x, y, CE, method="double_backprop",
                                        attack_norm="l2")
    new = kg.input_gradient_penalty(linear_classifier(), x, y, CE, estimator="double_backprop",
                                    attack_norm="l2")
    np.testing.assert_array_equal(old[1], new[1])
    with pytest.raises(TypeError, match="unexpected keyword argument.*'normm'"):
        kg.input_gradient_penalty(linear_classifier(), x, y, CE, normm="l2")


@pytest.mark.parametrize("where,old,new", [
    ("", "METHODS", "ESTIMATORS"), ("", "primitives", "attacks.ball"),
    ("", "autoattack", "attacks"), ("", "adversarial_training", "models"),
    ("", "BOUND_NORMS", "attacks.ball.NORMS"), ("", "AttackSettings", "attacks.AttackBudget"),
    ("attacks", "AttackSettings", "AttackBudget"),
    ("penalty", "as_float", "per_example.as_float"),
    ("penalty", "per_example_loss_fn", "per_example.loss_fn"),
    ("penalty", "ATTACK_NORMS", "per_example.ATTACK_NORMS"),
    ("penalty", "clean_pass", "backend.clean_pass"),
    ("penalty", "validate_options", "penalty.check_options"),
    ("attacks.ball", "norm", "per_example.norm"),
    ("attacks.ball", "within_radius", "attacks.ball.within_epsilon"),
    ("training", "validate", "training.check_config"),
    ("models", "validate_penalty_weight", "models.check_penalty_weight")])
def test_renamed_attributes_warn_and_are_the_new_ones(where, old, new):
    module = kg
    for part in filter(None, where.split(".")):
        module = getattr(module, part)
    with pytest.warns(DeprecationWarning, match=f"`{old}` is renamed `{new}`"):
        value = getattr(module, old)
    expected = module if where == "attacks" else kg
    for part in new.split("."):
        expected = getattr(expected, part)
    assert value is expected or value == expected


def test_the_old_settings_keyword_of_the_minimum_distance_protocol_is_the_budget():
    x, y = batch(n=4)
    with pytest.warns(DeprecationWarning, match="`settings` is renamed `budget`"):
        report = kg.evaluate_robustness(linear_classifier(), x, y, attack_norm="linf",
                                        attacks=["pgd"], epsilons=[0.5],
                                        settings=kg.AttackBudget(steps=2), sanity_checks=False,
                                        lower_bound=False, verbose=0)
    assert report.attack_distances["pgd"].shape == (4,)


def test_the_names_removed_after_their_minor_version_are_gone():
    """Deprecated in 0.7, removed in 0.8: the class, the call-time field names."""
    assert not hasattr(kg, "SingleStepAdversarialModel")
    with pytest.raises(TypeError, match="at_epsilon"):
        kg.training.TrainConfig(model_dir="", at_epsilon=0.1)


def test_the_attack_norm_default_changed_and_says_so_when_not_given():
    with pytest.warns(FutureWarning, match="attack_norm was not given; it is 'linf'"):
        model = kg.GradRegModel.from_model(linear_classifier())
    assert model.attack_norm == "linf" and model.dual_norm == "l1"
    x, y = batch()
    with pytest.warns(FutureWarning, match="input_gradient_penalty: attack_norm was not given"):
        kg.input_gradient_penalty(linear_classifier(), x, y, CE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kg.GradRegModel.from_model(linear_classifier(), attack_norm="l2")  # given: no warning
