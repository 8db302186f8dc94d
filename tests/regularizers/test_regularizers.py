"""The regularisers by name: each one's unit, and the checks of a name and its weight."""

import pytest

import keras_gradreg as kg


def test_every_name_gives_its_unit_and_none_gives_none():
    assert kg.regularizers.get("none") is None
    for name, unit in kg.regularizers.REGULARIZERS.items():
        assert isinstance(kg.regularizers.get(name), unit)
    assert kg.regularizers.get("gradient_penalty").scale == 0.5  # lambda / 2, as the paper
    assert kg.regularizers.get("trades").trains_on_clean


@pytest.mark.parametrize("name,weight,match", [
    ("elle", 1.0, "regularizer='elle'"), ("trades", 0.0, "needs a weight > 0"),
    ("none", 2.0, "a weight > 0 needs a regulariser"), ("grad_align", -1.0, "regularizer_weight=-1.0")])
def test_bad_names_and_weights_are_named(name, weight, match):
    with pytest.raises(ValueError, match=match):
        kg.regularizers.check(name, weight)
