"""What an evaluation reports: the error at a radius over the images asked for."""

import numpy as np
import pytest

import keras_gradreg as kg

pytestmark = pytest.mark.every_backend


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
    with pytest.warns(DeprecationWarning, match="`eps` is renamed `epsilon`"):
        assert report.error_at(eps=0.1) == 0.5

