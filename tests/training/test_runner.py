"""Training runs: files, resuming after an interruption, refusing to clobber, bad settings."""

import csv
import dataclasses
import json
import os
import shutil

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


def _weights_equal(a, b, rtol=1e-6, atol=1e-7):
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)


def _interrupt_after(config, monkeypatch, last_epoch):
    """Trains config until epoch `last_epoch` is checkpointed, then dies."""
    original = training.callbacks.Checkpoint.on_epoch_end

    def die(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == last_epoch:
            raise _Interrupt()

    with monkeypatch.context() as patch:
        patch.setattr(training.callbacks.Checkpoint, "on_epoch_end", die)
        with pytest.raises(_Interrupt):
            training.train(config, verbose=0)


def test_an_interrupted_run_resumes_and_ends_where_an_uninterrupted_one_would(tmp_path, monkeypatch):
    config = _config(tmp_path, epochs=4, penalty_every=2)
    uninterrupted, _, _ = training.train(dataclasses.replace(config, model_dir=str(tmp_path / "whole")),
                                         verbose=0)
    _interrupt_after(config, monkeypatch, last_epoch=1)
    assert not os.path.exists(os.path.join(config.model_dir, "model.keras"))
    model, history, _ = training.train(config, verbose=0)
    assert len(history.history["loss"]) == 2  # only epochs 2 and 3 ran again
    _weights_equal(model, uninterrupted)  # data order, optimizer state and lazy phase restored
    rows = list(csv.DictReader(open(os.path.join(config.model_dir, "history.csv"))))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert json.load(open(os.path.join(config.model_dir, "training_time.json")))["epochs"] == 4
    assert not os.path.exists(os.path.join(config.model_dir, "backup"))


def test_a_pgd_at_run_resumes_with_its_radius_ramp(tmp_path, monkeypatch):
    config = _config(tmp_path, epochs=3, method="pgd_at", ramp_epochs=2)
    _interrupt_after(config, monkeypatch, last_epoch=0)
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
    config = _config(tmp_path, epochs=2, **dict(dict(epsilon=0.1), **settings))
    whole, _, _ = training.train(dataclasses.replace(config, model_dir=str(tmp_path / "whole")),
                                 verbose=0)
    _interrupt_after(config, monkeypatch, last_epoch=0)
    model, _, _ = training.train(config, verbose=0)
    _weights_equal(model, whole)
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
    config = _config(tmp_path, epochs=1, method="free_at", replays=3, ramp_epochs=1)
    model, _, _ = training.train(config, verbose=0)
    assert isinstance(model, kg.FreeAdversarialTrainingModel) and model.replays == 3
    assert int(model.optimizer.iterations) == 3 * 256 // 64
    assert training.settings(config)["replays"] == 3
    assert "replays" not in training.settings(dataclasses.replace(config, method="pgd_at"))
    assert "attack_steps" not in training.settings(config)


def test_a_kill_while_the_model_is_written_loses_nothing(tmp_path, monkeypatch):
    config = _config(tmp_path, epochs=2)
    uninterrupted, _, _ = training.train(dataclasses.replace(config, model_dir=str(tmp_path / "whole")),
                                         verbose=0)
    original = keras.Model.save

    def half_written(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        raise _Interrupt()

    monkeypatch.setattr(keras.Model, "save", half_written)
    with pytest.raises(_Interrupt):
        training.train(config, verbose=0)
    monkeypatch.setattr(keras.Model, "save", original)
    assert not os.path.exists(os.path.join(config.model_dir, "model.keras"))  # not half of one
    assert os.path.exists(os.path.join(config.model_dir, "backup"))  # kept until then
    assert training.finished_run(config) is None
    model, history, _ = training.train(config, verbose=0)
    assert history.history == {}  # nothing left to train: it only saved the model
    _weights_equal(model, uninterrupted)
    _weights_equal(training.finished_run(config)[0], uninterrupted)


def test_a_truncated_model_file_beside_its_backup_is_resumed(tmp_path, monkeypatch):
    """What a kill -9 inside model.save left behind before writes were atomic."""
    config = _config(tmp_path, epochs=2)
    _interrupt_after(config, monkeypatch, last_epoch=1)
    open(os.path.join(config.model_dir, "model.keras"), "wb").close()  # 0 bytes
    with pytest.warns(UserWarning, match="unreadable"):
        training.train(config, verbose=0)
    assert training.finished_run(config) is not None


def _damage(path, content=b'{"seconds": 1'):
    with open(path, "wb") as f:
        f.write(content)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished run, trained once; tests damage copies of it."""
    config = _config(tmp_path_factory.mktemp("finished"), epochs=1)
    training.train(config, verbose=0)
    return config


@pytest.mark.parametrize("name", ["settings.json", "training_time.json", "model.keras"])
def test_an_unreadable_file_of_a_finished_run_is_named(finished, tmp_path, name):
    config = dataclasses.replace(finished, model_dir=str(tmp_path / "copy"))
    shutil.copytree(finished.model_dir, config.model_dir)
    path = os.path.join(config.model_dir, name)
    _damage(path)
    with pytest.raises(training.RunFileError, match=f"{name}.*--overwrite"):
        training.finished_run(config)
    with pytest.raises((training.RunFileError, FileExistsError)):
        training.train(config, verbose=0)


@pytest.mark.parametrize("name", ["state.json", "epoch-1.weights.h5"])
def test_an_unreadable_checkpoint_is_named_before_any_training(tmp_path, monkeypatch, name):
    config = _config(tmp_path, epochs=3)
    _interrupt_after(config, monkeypatch, last_epoch=0)
    _damage(os.path.join(config.model_dir, "backup", name))
    history = open(os.path.join(config.model_dir, "history.csv")).read()
    epochs_run = []
    monkeypatch.setattr(training.callbacks.Checkpoint, "on_epoch_begin",
                        lambda self, epoch, logs=None: epochs_run.append(epoch))
    with pytest.raises(training.RunFileError, match=f"{name}.*--overwrite"):
        training.train(config, verbose=0)
    assert not epochs_run
    assert open(os.path.join(config.model_dir, "history.csv")).read() == history


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
    config = _config(tmp_path, **kwargs)
    with pytest.raises(ValueError, match=match):
        training.train(config, verbose=0)
    assert not os.path.exists(config.model_dir)


def test_numpy_numbers_are_valid_settings_and_stored_as_plain_ones(tmp_path):
    config = _config(tmp_path, epochs=np.int64(1), penalty_weight=np.float32(0.5),
                     learning_rate=np.float64(1e-3))
    training.train(config, verbose=0)
    stored = json.load(open(os.path.join(config.model_dir, "settings.json")))
    assert stored["epochs"] == 1 and stored["penalty_weight"] == 0.5
    assert training.finished_run(config) is not None


def test_settings_written_before_the_attack_norm_rename_still_match(tmp_path):
    config = _config(tmp_path, epochs=1)
    training.train(config, verbose=0)
    path = os.path.join(config.model_dir, "settings.json")
    stored = json.load(open(path))
    stored["norm"] = {"linf": "l1"}[stored.pop("attack_norm")]
    json.dump(stored, open(path, "w"))
    assert training.finished_run(config) is not None
