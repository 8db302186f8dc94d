"""The callbacks every run trains with: the clock times the epochs' steps only, and the
checkpoint names a whole one at every moment, keeping only the last."""

import json
import os
import time

import keras
import numpy as np

from helpers import linear_classifier
from keras_gradreg.training import callbacks
from keras_gradreg.training import run_dir


class _SlowLogger(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        time.sleep(1.0)


def test_the_clock_leaves_out_what_callbacks_do_after_the_epoch():
    model = linear_classifier()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clock = callbacks.Clock()
    x, y = np.zeros((8, 5), "float32"), np.zeros(8, int)
    start = time.perf_counter()
    model.fit(x, y, epochs=1, verbose=0, callbacks=[clock, _SlowLogger()])
    assert 0 < clock.seconds <= time.perf_counter() - start - 1.0


def test_the_checkpoint_keeps_the_last_epoch_and_names_it_with_the_time(tmp_path):
    model = linear_classifier()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clock = callbacks.Clock()
    checkpoint = callbacks.Checkpoint(str(tmp_path), run_dir.Resume(0, 1.5, None), clock)
    x, y = np.zeros((8, 5), "float32"), np.zeros(8, int)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[clock, checkpoint])
    backup = tmp_path / run_dir.BACKUP_DIR
    assert sorted(os.listdir(backup)) == ["epoch-2.weights.h5", run_dir.STATE_FILE]
    state = json.load(open(backup / run_dir.STATE_FILE))
    assert state["epochs"] == 2 and state["weights"] == "epoch-2.weights.h5"
    assert state["seconds"] > 1.5  # the resumed run's seconds, plus this run's
    restored = linear_classifier(seed=1)
    restored.load_weights(backup / state["weights"])
    for a, b in zip(model.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(a, b)
