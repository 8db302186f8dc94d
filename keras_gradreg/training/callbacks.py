"""The callbacks every run trains with: its clock, and its crash-safe checkpoint."""

import glob
import json
import os
import time

import keras

from keras_gradreg import files
from keras_gradreg.training.distributed import from_chief
from keras_gradreg.training.distributed import written
from keras_gradreg.training.run_dir import BACKUP_DIR
from keras_gradreg.training.run_dir import STATE_FILE
from keras_gradreg.training.run_dir import Resume
from keras_gradreg.training.run_dir import RunFileError
from keras_gradreg.training.run_dir import path_in

class Clock(keras.callbacks.Callback):
    """The wall time of each epoch's steps: from the epoch's start to the first epoch-end
    callback (put it first), so logging, monitoring and checkpointing do not count."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self._start


class Checkpoint(keras.callbacks.Callback):
    """Saves weights and optimizer state at each epoch's end, whole or not at all.

    The weights go to BACKUP_DIR/epoch-E.weights.h5, then STATE_FILE is replaced to name
    them (with the epochs done and the training seconds so far), then older checkpoints
    are removed: at every moment STATE_FILE names a complete checkpoint.

    In a multi-process run only the chief `writes` (and reads); on resume it sends the
    weights and optimizer state to the other processes (`shared`), which need no access
    to model_dir.
    """

    def __init__(self, model_dir: str, resume: Resume, clock: "Clock", writes: bool = True,
                 shared: bool = False):
        super().__init__()
        self.backup = path_in(model_dir, BACKUP_DIR)
        self.resume, self.clock, self.writes, self.shared = resume, clock, writes, shared
        self.seconds = resume.seconds

    def on_train_begin(self, logs=None):
        if self.resume.epochs == 0:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        with from_chief(self.resume.weights, self.shared) as weights:
            try:
                self.model.load_weights(weights)
            except (OSError, ValueError) as error:
                raise RunFileError(f"{self.resume.weights} cannot be loaded ({error}); start "
                                   "afresh with --overwrite.") from error

    def on_epoch_end(self, epoch, logs=None):
        self.seconds += self.clock.seconds
        name = f"epoch-{epoch + 1}.weights.h5"
        if self.writes:
            os.makedirs(self.backup, exist_ok=True)
        with written(path_in(self.backup, name), self.writes) as temporary:
            self.model.save_weights(temporary)
        if not self.writes:
            return
        state = {"epochs": epoch + 1, "seconds": self.seconds, "weights": name}
        files.write_text(path_in(self.backup, STATE_FILE), json.dumps(state))
        for old in glob.glob(path_in(self.backup, "epoch-*.weights.h5")):
            if os.path.basename(old) != name:
                os.remove(old)
