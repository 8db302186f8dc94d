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
    with pytest.warns(DeprecationWarning, match="`step_fraction` is renamed `reach`"):
        assert kg.AttackSettings(step_fraction=2.0).reach == 2.0
    with pytest.warns(DeprecationWarning, match="AdversarialTrainingModel.attack='fgsm_rs'"):
        single = kg.SingleStepAdversarialModel.from_model(linear_classifier(), method="n_fgsm")
    assert single.attack == "n_fgsm" and isinstance(single, kg.AdversarialTrainingModel)
    with pytest.raises(TypeError, match="unexpected keyword argument.*'normm'"):
        kg.input_gradient_penalty(linear_classifier(), x, y, CE, normm="l2")


@pytest.mark.parametrize("old,new", [("METHODS", "ESTIMATORS"), ("primitives", "attacks.ball"),
                                     ("autoattack", "attacks"), ("adversarial_training", "models"),
                                     ("BOUND_NORMS", "attacks.ball.NORMS")])
def test_renamed_attributes_warn_and_are_the_new_ones(old, new):
    with pytest.warns(DeprecationWarning, match=f"`{old}` is renamed `{new}`"):
        value = getattr(kg, old)
    expected = kg
    for part in new.split("."):
        expected = getattr(expected, part)
    assert value is expected or value == expected


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
