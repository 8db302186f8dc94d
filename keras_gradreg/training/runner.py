"""`train`: one run, from its checked config to its saved model, resumable."""

import json
import shutil

import keras

from keras_gradreg import models
from keras_gradreg import data as data_lib
from keras_gradreg import datasets
from keras_gradreg import files
from keras_gradreg.training import distributed
from keras_gradreg.training import run_dir
from keras_gradreg.training.callbacks import Checkpoint
from keras_gradreg.training.callbacks import Clock
from keras_gradreg.training.config import ADVERSARIAL
from keras_gradreg.training.config import MONITOR_IMAGES
from keras_gradreg.training.config import TrainConfig
from keras_gradreg.training.config import check_config
from keras_gradreg.training.recipe import compiled
from keras_gradreg.training.recipe import test_images

def train(config: TrainConfig, verbose: int = 2) -> tuple:
    """Runs (or resumes) one training run.

    Returns:
      (trained model, keras History of this process's epochs, total training seconds).

    An unfinished run of the same settings in model_dir resumes from its last completed
    epoch; overwrite=True starts afresh instead, replacing whatever model_dir holds.

    Raises:
      FileExistsError: model_dir already holds a finished model and overwrite is False.
      ValueError: a bad setting, or model_dir holds a run with other settings and
        overwrite is False.
      RunFileError: a file of the run cannot be read (before any training).
      ConnectionError: the processes of a multi-process run did not all connect in time.

    Like the scripts' entry points, it seeds the process (`keras.utils.set_random_seed(
    config.seed)`: Python's, NumPy's, the backend's and Keras' generators), which a run needs
    to be repeatable and to resume where it would have ended; the caller's random state is
    not restored afterwards (the dtype policy is). Seed again after it where that matters.

    In a multi-process run (strategy="data_parallel", num_processes > 1) every process
    runs this with the same settings; process 0, the chief, alone reads and writes
    model_dir, and the others receive its decisions and, on resume, its weights.
    """
    config = check_config(config)
    distributed.start_processes(config)
    if distributed.is_chief(config):
        failed, resume = 1, run_dir.Resume(0, 0.0, None)
        try:
            resume = run_dir.prepare(config)
            failed = 0
        finally:  # the others wait for this, also when preparing failed
            distributed.agree(config, [failed, resume.epochs])
    else:
        failed, epochs = distributed.agree(config, [1, 0])
        if failed:
            raise RuntimeError(f"process {config.process_id}: process 0 (the chief) stopped "
                               "before training; its output says why.")
        resume = run_dir.Resume(epochs, 0.0, None)
    keras.utils.set_random_seed(config.seed)
    policy = keras.mixed_precision.global_policy()
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        return _fit(config, resume, verbose if distributed.is_chief(config) else 0)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def _fit(config: TrainConfig, resume: run_dir.Resume, verbose: int) -> tuple:
    # A run killed after its last epoch still builds from one epoch of data.
    first = min(resume.epochs, config.epochs - 1)
    train_data, steps = data_lib.training_epochs(
        config.dataset, datasets.DATASETS[config.dataset].splits[0], batch_size=config.batch_size,
        seed=config.seed, first_epoch=first, epochs=config.epochs, cutout=config.cutout,
        data_dir=config.data_dir, download=config.download, limit=config.train_limit)
    chief = distributed.is_chief(config)
    clock = Clock()
    checkpoint = Checkpoint(config.model_dir, resume, clock, writes=chief,
                             shared=config.num_processes > 1)
    callbacks = [
        keras.callbacks.TensorBoard(run_dir.path_in(config.model_dir, "logs")),
        keras.callbacks.CSVLogger(run_dir.path_in(config.model_dir, run_dir.HISTORY_FILE), append=True),
    ] if chief else []
    if config.method in ADVERSARIAL:
        x, y = test_images(config.dataset, MONITOR_IMAGES, data_dir=config.data_dir,
                           download=config.download)
        callbacks = [models.EpsilonRamp(config.ramp_epochs),
                     models.RobustnessMonitor(x, y, config.epsilon,
                                              attack_norm=config.attack_norm)] + callbacks
    # The clock first; the checkpoint last: an epoch is checkpointed once everything
    # else has recorded it (a row the CSV got before a kill is trimmed on resume, see
    # trim_history).
    callbacks = [clock] + callbacks + [checkpoint]
    with distributed.distribution(config):
        model = compiled(config, steps)
        # shuffle=False: each epoch's order is already a function of (seed, epoch), and
        # Keras ignores (with a warning) shuffle=True for a dataset.
        history = model.fit(train_data, epochs=config.epochs, initial_epoch=resume.epochs,
                            steps_per_epoch=steps, callbacks=callbacks, verbose=verbose,
                            shuffle=False)
    # The time first, then the model (whose presence marks the run finished), then
    # the checkpoint goes: a kill between any two leaves a run that resumes or is done.
    if chief:
        files.write_text(run_dir.path_in(config.model_dir, run_dir.TIME_FILE),
                         json.dumps({"seconds": checkpoint.seconds, "epochs": config.epochs}))
    with distributed.written(run_dir.path_in(config.model_dir, run_dir.MODEL_FILE), chief) as temporary:
        model.save(temporary)
    if chief:
        shutil.rmtree(run_dir.path_in(config.model_dir, run_dir.BACKUP_DIR), ignore_errors=True)
    return model, history, checkpoint.seconds
