"""The attacks' budgets refuse bad values by name."""

import pytest

import keras_gradreg as kg

pytestmark = pytest.mark.every_backend


@pytest.mark.parametrize("kwargs,match", [(dict(steps=0), "steps=0"), (dict(restarts=1.5), "restarts=1.5"),
                                          (dict(cw_learning_rate=-1.0), "cw_learning_rate=-1.0"),
                                          (dict(spsa_samples=3), "spsa_samples=3"),
                                          (dict(spsa_delta=float("inf")), "spsa_delta=inf"),
                                          (dict(search_tolerance=1.0), "search_tolerance=1.0"),
                                          (dict(search_tolerance=-0.5), r"search_tolerance=-0.5 .* \[0, 1\)"),
                                          (dict(warm_start="yes"), "warm_start='yes' must be True")])
def test_bad_attack_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kg.AttackBudget(**kwargs)
