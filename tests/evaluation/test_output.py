"""Result files: written whole or not at all, from arrays or a dataset, with table and plot."""

import csv
import json
import os

import pytest
import tensorflow as tf

from helpers import FAST
from helpers import ONE_STEP
from helpers import evaluation_problem
import keras_gradreg as kg


def test_result_files_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    model, x, y, _, _ = evaluation_problem(seed=7)
    report = kg.evaluate_robustness(model, x, y, attacks=(ONE_STEP,), epsilons=(0.1,), budget=FAST,
                                    sanity_checks=False, verbose=0)

    def fail(*args):
        raise KeyboardInterrupt

    from keras_gradreg import plotting

    monkeypatch.setattr(plotting, "plot_error_curves", fail)
    with pytest.raises(KeyboardInterrupt):
        kg.write_results([report], str(tmp_path))
    assert os.listdir(tmp_path) == []  # neither the JSON nor the CSV written before it


def test_dataset_input_and_files_table_and_plot(tmp_path):
    model, x, y, _, _ = evaluation_problem(seed=7)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    reports = [kg.evaluate_robustness(model, data, attacks=(ONE_STEP, "apgd_ce"), epsilons=(0.05, 0.1),
                                      budget=FAST, sanity_checks=False, verbose=0, name=name,
                                      training_time=36.0)
               for name in ("a", "b")]
    assert len(reports[0].distances) == len(x)
    table = kg.format_table(reports)
    assert "% error at 0.05" in table and "  0.01  " in table  # 36 s = 0.01 h
    paths = kg.write_results(reports, str(tmp_path / "out"))
    loaded = json.load(open(paths["json"]))
    assert loaded[0]["error_at"]["0.1"] == reports[0].error_at(0.1)
    assert len(loaded[0]["images"]["distance"]) == len(x)
    rows = list(csv.DictReader(open(paths["csv"])))
    assert [r["model"] for r in rows] == ["a", "b"]
    assert float(rows[0]["error_at_0.05"]) == pytest.approx(reports[0].error_at(0.05))
    assert os.path.getsize(paths["plot"]) > 1000
    before = open(paths["json"]).read()
    with pytest.raises(FileExistsError, match="overwrite"):
        kg.write_results(reports[:1], str(tmp_path / "out"))
    assert open(paths["json"]).read() == before
    kg.write_results(reports[:1], str(tmp_path / "out"), overwrite=True)
    assert len(json.load(open(paths["json"]))) == 1
