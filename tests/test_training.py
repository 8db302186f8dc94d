"""Training runs: files, resuming after an interruption, refusing to clobber, bad settings."""

import csv
import dataclasses
import json
import os

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg import training


def _config(tmp_path, **kwargs):
    settings = dict(model_dir=str(tmp_path / "run"), epochs=3, batch_size=64, train_limit=256)
    settings.update(kwargs)
    return training.TrainConfig(**settings)


def test_a_run_writes_model_time_history_and_logs(tmp_path):
    config = _config(tmp_path)
    model, history, seconds = training.train(config, verbose=0)
    assert isinstance(model, kg.GradRegModel) and model.norm == "l1"
    assert seconds > 0 and len(history.history["loss"]) == 3
    loaded, loaded_seconds = training.finished_run(config)
    assert loaded_seconds == pytest.approx(seconds)
    x = np.zeros((2, 28, 28, 1), "float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    rows = list(csv.DictReader(open(os.path.join(config.model_dir, "history.csv"))))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2] and "penalty" in rows[0]
    assert os.listdir(os.path.join(config.model_dir, "logs"))


def test_a_finished_model_is_not_overwritten(tmp_path):
    config = _config(tmp_path, epochs=1)
    training.train(config, verbose=0)
    path = os.path.join(config.model_dir, "model.keras")
    stamp = os.path.getmtime(path)
    with pytest.raises(FileExistsError, match="overwrite"):
        training.train(config, verbose=0)
    assert os.path.getmtime(path) == stamp


def test_a_run_of_other_settings_is_neither_reused_nor_resumed(tmp_path, monkeypatch):
    config = _config(tmp_path, epochs=1)
    training.train(config, verbose=0)
    other = dataclasses.replace(config, penalty_every=2)
    with pytest.raises(ValueError, match="penalty_every=1 there, 2 asked"):
        training.finished_run(other)
    assert training.finished_run(config) is not None
    # an unfinished run: its settings file and backup, no model yet
    os.remove(os.path.join(config.model_dir, "model.keras"))
    before = sorted(os.listdir(config.model_dir))
    with pytest.raises(ValueError, match="penalty_every=1 there, 2 asked"):
        training.train(other, verbose=0)
    assert sorted(os.listdir(config.model_dir)) == before
    _, history, _ = training.train(dataclasses.replace(other, overwrite=True), verbose=0)
    assert len(history.history["loss"]) == 1
    assert training.finished_run(other)[0].penalty_every == 2


def test_settings_ignore_what_a_method_does_not_use(tmp_path):
    plain = _config(tmp_path, method="plain")
    assert training.settings(plain) == training.settings(dataclasses.replace(plain, penalty_weight=5.0))
    gradreg = _config(tmp_path)
    assert training.settings(gradreg) != training.settings(dataclasses.replace(gradreg, h=0.5))


class _Interrupt(Exception):
    pass


def test_an_interrupted_run_resumes_from_the_last_completed_epoch(tmp_path, monkeypatch):
    config = _config(tmp_path, epochs=4, method="pgd_at", at_ramp_epochs=2)
    original = training._TrainingClock.on_epoch_end

    def die_after_second_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 1:
            raise _Interrupt()

    monkeypatch.setattr(training._TrainingClock, "on_epoch_end", die_after_second_epoch)
    with pytest.raises(_Interrupt):
        training.train(config, verbose=0)
    assert not os.path.exists(os.path.join(config.model_dir, "model.keras"))
    monkeypatch.setattr(training._TrainingClock, "on_epoch_end", original)
    model, history, _ = training.train(config, verbose=0)
    assert len(history.history["loss"]) == 2  # only epochs 2 and 3 ran again
    rows = list(csv.DictReader(open(os.path.join(config.model_dir, "history.csv"))))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert json.load(open(os.path.join(config.model_dir, "training_time.json")))["epochs"] == 4
    assert float(model.current_epsilon.numpy()) == pytest.approx(0.3)


def test_adversarial_training_examples_stay_within_epsilon_and_range():
    base = kg.models.small_cnn((28, 28, 1), 10)
    model = kg.AdversarialTrainingModel.from_model(base, epsilon=0.1)
    (x, y), _ = kg.load_offline_mnist()
    x_adv = model.adversarial_examples(x[:32], y[:32]).numpy()
    assert np.abs(x_adv - x[:32]).max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert float(loss(y[:32], base(x_adv))) > float(loss(y[:32], base(x[:32])))


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(method="trades"), "method='trades'"), (dict(dataset="svhn"), "dataset='svhn'"),
     (dict(epochs=0), "epochs=0"), (dict(h=-0.1), "h=-0.1"), (dict(norm="l3"), "norm='l3'"),
     (dict(penalty_weight=-1.0), "penalty_weight=-1.0"), (dict(strategy="tpu"), "strategy='tpu'"),
     (dict(penalty_every=0), "penalty_every=0"),
     (dict(method="pgd_at", at_epsilon=0.0), "at_epsilon=0.0"),
     (dict(method="pgd_at", at_ramp_epochs=0), "at_ramp_epochs=0")],
)
def test_bad_settings_fail_before_anything_is_built(tmp_path, kwargs, match):
    config = _config(tmp_path, **kwargs)
    with pytest.raises(ValueError, match=match):
        training.train(config, verbose=0)
    assert not os.path.exists(config.model_dir)
