"""Training runs: what a run writes, resuming after an interruption, bad settings (the run's
files, refused, reused or damaged: tests/training/test_run_dir.py)."""

import csv
import dataclasses
import json
import os
import shutil

import keras
import numpy as np
import pytest

from helpers import Interrupt
from helpers import interrupt_after
from helpers import run_config
from helpers import weights_close
import keras_gradreg as kg
from keras_gradreg import training


def test_a_run_writes_model_time_history_and_logs(tmp_path):
    config = run_config(tmp_path)
    model, history, seconds = training.train(config, verbose=0)
    assert isinstance(model, kg.GradRegModel) and model.attack_norm == "linf" and model.dual_norm == "l1"
    assert seconds > 0 and len(history.history["loss"]) == 3
    loaded, loaded_seconds = training.finished_run(config)
    assert loaded_seconds == pytest.approx(seconds)
    x = np.zeros((2, 28, 28, 1), "float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    rows = list(csv.DictReader(open(os.path.join(config.model_dir, "history.csv"))))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2] and "penalty" in rows[0]
    assert sorted(os.listdir(config.model_dir)) == ["history.csv", "logs", "model.keras",
                                                    "settings.json", "training_time.json"]
    assert os.listdir(os.path.join(config.model_dir, "logs"))


def test_settings_ignore_what_a_method_does_not_use(tmp_path):
    plain = run_config(tmp_path, method="plain")
    assert training.settings(plain) == training.settings(dataclasses.replace(plain, penalty_weight=5.0))
    gradreg = run_config(tmp_path)
    assert training.settings(gradreg) != training.settings(dataclasses.replace(gradreg, h=0.5))


def test_an_interrupted_run_resumes_and_ends_where_an_uninterrupted_one_would(tmp_path, monkeypatch):
    config = run_config(tmp_path, epochs=4, penalty_every=2)
    uninterrupted, _, _ = training.train(dataclasses.replace(config, model_dir=str(tmp_path / "whole")),
                                         verbose=0)
    interrupt_after(config, monkeypatch, last_epoch=1)
    assert not os.path.exists(os.path.join(config.model_dir, "model.keras"))
    model, history, _ = training.train(config, verbose=0)
    assert len(history.history["loss"]) == 2  # only epochs 2 and 3 ran again
    weights_close(model, uninterrupted)  # data order, optimizer state and lazy phase restored
    rows = list(csv.DictReader(open(os.path.join(config.model_dir, "history.csv"))))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert json.load(open(os.path.join(config.model_dir, "training_time.json")))["epochs"] == 4
    assert not os.path.exists(os.path.join(config.model_dir, "backup"))


def test_a_pgd_at_run_resumes_with_its_radius_ramp(tmp_path, monkeypatch):
    config = run_config(tmp_path, epochs=3, method="pgd_at", ramp_epochs=2)
    interrupt_after(config, monkeypatch, last_epoch=0)
    model, history, _ = training.train(config, verbose=0)
    assert len(history.history["loss"]) == 2
    assert float(model.current_epsilon.numpy()) == pytest.approx(0.3)
    loaded, _ = training.finished_run(config)  # a saved AdversarialTrainingModel loads
    assert isinstance(loaded, kg.AdversarialTrainingModel) and loaded.epsilon == 0.3


@pytest.mark.parametrize("settings", [
    dict(method="n_fgsm", ramp_epochs=0, regularizer="adaptive_local_linearity",
         regularizer_weight=100.0),
    dict(method="fgsm_rs", attack_norm="l2", epsilon=1.0, ramp_epochs=1,
         regularizer="local_linearity", regularizer_weight=10.0),
    dict(method="trades", epsilon=0.1, attack_steps=2, ramp_epochs=1)])
def test_an_adversarial_run_resumes_exactly_and_records_its_held_out_robustness(tmp_path, monkeypatch,
                                                                                 settings):
    """The random draws are a function of (seed, step) and ELLE-A's state is checkpointed:
    a resumed run draws and weighs what an uninterrupted one would (FGSM-RS, N-FGSM, TRADES)."""
    config = run_config(tmp_path, epochs=2, **dict(dict(epsilon=0.1), **settings))
    whole, _, _ = training.train(dataclasses.replace(config, model_dir=str(tmp_path / "whole")),
                                 verbose=0)
    interrupt_after(config, monkeypatch, last_epoch=0)
    model, _, _ = training.train(config, verbose=0)
    weights_close(model, whole)
    assert isinstance(model, kg.AdversarialTrainingModel)
    assert (model.attack, model.regularizer, model.attack_norm) == (
        "pgd" if config.method == "trades" else config.method,
        "trades" if config.method == "trades" else config.regularizer, config.attack_norm)
    assert float(keras.ops.convert_to_numpy(model.current_epsilon)) == pytest.approx(config.epsilon)
    rows = list(csv.DictReader(open(os.path.join(config.model_dir, "history.csv"))))
    assert [int(r["epoch"]) for r in rows] == list(range(config.epochs))
    assert all(0 <= float(r["pgd_accuracy"]) <= 1 and r["catastrophic_overfitting"] in ("0.0", "1.0")
               for r in rows)


def test_a_free_at_run_makes_m_updates_per_batch(tmp_path):
    config = run_config(tmp_path, epochs=1, method="free_at", replays=3, ramp_epochs=1)
    model, _, _ = training.train(config, verbose=0)
    assert isinstance(model, kg.FreeAdversarialTrainingModel) and model.replays == 3
    assert int(model.optimizer.iterations) == 3 * 256 // 64
    assert training.settings(config)["replays"] == 3
    assert "replays" not in training.settings(dataclasses.replace(config, method="pgd_at"))
    assert "attack_steps" not in training.settings(config)


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(method="madry"), "method='madry'"), (dict(dataset="svhn"), "dataset='svhn'"),
     (dict(epochs=0), "epochs=0"), (dict(h=-0.1), "h=-0.1"), (dict(attack_norm="l3"), "attack_norm='l3'"),
     (dict(penalty_weight=-1.0), "penalty_weight=-1.0"), (dict(strategy="tpu"), "strategy='tpu'"),
     (dict(penalty_every=0), "penalty_every=0"),
     (dict(penalty_weight=float("nan")), "penalty_weight=nan"), (dict(h=float("inf")), "h=inf"),
     (dict(learning_rate=float("nan")), "learning_rate=nan"),
     (dict(weight_decay=float("nan")), "weight_decay=nan"), (dict(epochs=2.5), "epochs=2.5"),
     (dict(method="pgd_at", epsilon=float("nan")), "epsilon=nan"),
     (dict(method="pgd_at", epsilon=0.0), "epsilon=0.0"),
     (dict(method="pgd_at", ramp_epochs=-1), "ramp_epochs=-1"),
     (dict(method="pgd_at", attack_steps=0), "attack_steps=0"),
     (dict(method="fgsm_rs", epsilon=2.0), r"epsilon=2.0.*attack_norm='l2'"),
     (dict(method="fgsm_rs", attack_norm="l2", epsilon=30.0), r"epsilon=30.0.*l2 diameter"),
     (dict(method="fgsm_rs", attack_norm="l1"), r"attack_norm='l1'.*\('linf', 'l2'\)"),
     (dict(method="fgsm_rs", regularizer="elle"), "regularizer='elle'"),
     (dict(method="fgsm_rs", regularizer="grad_align", regularizer_weight=-1.0),
      "regularizer_weight=-1.0"),
     (dict(method="n_fgsm", regularizer="grad_align", regularizer_weight=float("nan")),
      "regularizer_weight=nan"),
     (dict(method="fgsm_rs", regularizer="local_linearity"), "needs a weight > 0"),
     (dict(method="gradreg", regularizer="local_linearity", regularizer_weight=1.0),
      "regularises adversarial training"),
     (dict(method="trades", regularizer="grad_align", regularizer_weight=1.0),
      "regularises adversarial training"),
     (dict(method="trades", trades_beta=0.0), "trades_beta=0.0"),
     (dict(method="free_at", replays=0), "replays=0")],
)
def test_bad_settings_fail_before_anything_is_built(tmp_path, kwargs, match):
    config = run_config(tmp_path, **kwargs)
    with pytest.raises(ValueError, match=match):
        training.train(config, verbose=0)
    assert not os.path.exists(config.model_dir)


def test_numpy_numbers_are_valid_settings_and_stored_as_plain_ones(tmp_path):
    config = run_config(tmp_path, epochs=np.int64(1), penalty_weight=np.float32(0.5),
                     learning_rate=np.float64(1e-3))
    training.train(config, verbose=0)
    stored = json.load(open(os.path.join(config.model_dir, "settings.json")))
    assert stored["epochs"] == 1 and stored["penalty_weight"] == 0.5
    assert training.finished_run(config) is not None


