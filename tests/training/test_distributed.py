"""Processes and devices of a run, in one process: the strategy's scope from the backend
module, and the chief's decisions and files as themselves."""

import dataclasses

import keras
import pytest

from helpers import run_config
from keras_gradreg.training import distributed


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's strategies")
def test_a_run_builds_in_its_strategys_scope(tmp_path):
    import tensorflow as tf

    config = run_config(tmp_path)
    with distributed.distribution(config):
        assert not tf.distribute.has_strategy()
    with distributed.distribution(dataclasses.replace(config, strategy="mirrored")):
        assert isinstance(tf.distribute.get_strategy(), tf.distribute.MirroredStrategy)


def test_one_process_is_its_own_chief(tmp_path):
    config = run_config(tmp_path)
    distributed.start_processes(config)  # nothing to join
    assert distributed.is_chief(config)
    assert distributed.agree(config, [3, 1]) == [3, 1]
    path = str(tmp_path / "weights.h5")
    with distributed.from_chief(path, shared=False) as local:
        assert local == path
    with distributed.written(path, writes=True) as temporary:
        open(temporary, "w").write("whole")
    assert open(path).read() == "whole"
    with distributed.written(str(tmp_path / "other.h5"), writes=False) as temporary:
        open(temporary, "w").write("thrown away")
    assert not (tmp_path / "other.h5").exists()
