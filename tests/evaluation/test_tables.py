"""The tables a report prints: the paper's columns from what was measured."""

import numpy as np
import pytest

import keras_gradreg as kg

pytestmark = pytest.mark.every_backend


def test_a_report_and_its_table_say_what_was_measured():
    report = kg.RobustnessReport(
        name="net", attack_norm="l2", epsilons=(0.5, 1.0), distances=np.array([0.0, 0.3, 0.7, 2.0]),
        best_attack=np.array(["clean", "pgd", "fab_t", "pgd"]), attack_distances={},
        adversarial=np.zeros((4, 1)), indices=np.arange(4), search_tolerance=0.01, checks=[],
        training_time=12.0)
    assert report.clean_error == 0.25
    assert [report.error_at(e) for e in report.epsilons] == [0.5, 0.75]
    table = kg.format_table([report])
    assert "% error at 0.5" in table and "% error at 1" in table
    row = next(line for line in table.splitlines() if line.startswith("net"))
    assert "25.00" in row and "50.00" in row and "75.00" in row
