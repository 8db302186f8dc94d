"""A run's directory: a finished model never overwritten, a run of other settings never
reused or resumed, files written whole, damaged files named before any training."""

import dataclasses
import json
import os
import shutil

import keras
import pytest

from helpers import Interrupt
from helpers import interrupt_after
from helpers import run_config
from helpers import weights_close
from keras_gradreg import training


def test_a_finished_model_is_not_overwritten(tmp_path):
    config = run_config(tmp_path, epochs=1)
    training.train(config, verbose=0)
    path = os.path.join(config.model_dir, "model.keras")
    stamp = os.path.getmtime(path)
    with pytest.raises(FileExistsError, match="overwrite"):
        training.train(config, verbose=0)
    assert os.path.getmtime(path) == stamp


def test_a_run_of_other_settings_is_neither_reused_nor_resumed(tmp_path, monkeypatch):
    config = run_config(tmp_path, epochs=1)
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


def test_a_kill_while_the_model_is_written_loses_nothing(tmp_path, monkeypatch):
    config = run_config(tmp_path, epochs=2)
    uninterrupted, _, _ = training.train(dataclasses.replace(config, model_dir=str(tmp_path / "whole")),
                                         verbose=0)
    original = keras.Model.save

    def half_written(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        raise Interrupt()

    monkeypatch.setattr(keras.Model, "save", half_written)
    with pytest.raises(Interrupt):
        training.train(config, verbose=0)
    monkeypatch.setattr(keras.Model, "save", original)
    assert not os.path.exists(os.path.join(config.model_dir, "model.keras"))  # not half of one
    assert os.path.exists(os.path.join(config.model_dir, "backup"))  # kept until then
    assert training.finished_run(config) is None
    model, history, _ = training.train(config, verbose=0)
    assert history.history == {}  # nothing left to train: it only saved the model
    weights_close(model, uninterrupted)
    weights_close(training.finished_run(config)[0], uninterrupted)


def test_a_truncated_model_file_beside_its_backup_is_resumed(tmp_path, monkeypatch):
    """What a kill -9 inside model.save left behind before writes were atomic."""
    config = run_config(tmp_path, epochs=2)
    interrupt_after(config, monkeypatch, last_epoch=1)
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
    config = run_config(tmp_path_factory.mktemp("finished"), epochs=1)
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
    config = run_config(tmp_path, epochs=3)
    interrupt_after(config, monkeypatch, last_epoch=0)
    _damage(os.path.join(config.model_dir, "backup", name))
    history = open(os.path.join(config.model_dir, "history.csv")).read()
    epochs_run = []
    monkeypatch.setattr(training.callbacks.Checkpoint, "on_epoch_begin",
                        lambda self, epoch, logs=None: epochs_run.append(epoch))
    with pytest.raises(training.RunFileError, match=f"{name}.*--overwrite"):
        training.train(config, verbose=0)
    assert not epochs_run
    assert open(os.path.join(config.model_dir, "history.csv")).read() == history


def test_settings_written_before_the_attack_norm_rename_still_match(tmp_path):
    config = run_config(tmp_path, epochs=1)
    training.train(config, verbose=0)
    path = os.path.join(config.model_dir, "settings.json")
    stored = json.load(open(path))
    stored["norm"] = {"linf": "l1"}[stored.pop("attack_norm")]
    json.dump(stored, open(path, "w"))
    assert training.finished_run(config) is not None
