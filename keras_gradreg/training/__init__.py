"""Training runs as the example scripts launch them: resumable, logged, never clobbering.

`train(config)` builds the data and the model, trains with the chosen method (plain, the
finite-difference penalty, its double-backprop twin, or adversarial training: PGD, fast
or free), logs to TensorBoard and CSV, saves `model.keras` and the wall-clock training
time in `config.model_dir`, and resumes from the last completed epoch if a previous run
with the same directory was interrupted.

What a run guarantees:

- every file it writes (model, settings, time, checkpoints) is written whole or not at
  all, so a kill -9 at any moment loses at most the epoch in progress;
- the checkpoint of the last completed epoch (`backup/`) is kept until `model.keras` is
  safely written;
- epoch e's data order and augmentation depend on (seed, e) only, and the checkpoint
  holds the weights and the optimizer state, so a resumed run ends with the weights of
  an uninterrupted one;
- files it cannot read, or a run of other settings, stop it before any training with an
  error naming the file and the way out (`overwrite=True`, `--overwrite`).

One idea per module: config (TrainConfig and its checks), recipe (the model, optimizer
and held-out images a run is built from), run_dir (a run's files, finished or resumable),
callbacks (its clock and crash-safe checkpoint), distributed (processes and devices),
runner (`train`).
"""

from keras_gradreg import deprecation
from keras_gradreg.training.config import ADVERSARIAL
from keras_gradreg.training.config import PENALISED
from keras_gradreg.training.config import DEFAULT_COORDINATOR_TIMEOUT
from keras_gradreg.training.config import MONITOR_IMAGES
from keras_gradreg.training.config import OPTIMIZERS
from keras_gradreg.training.config import PAPER_SCHEDULE
from keras_gradreg.training.config import SCHEDULES
from keras_gradreg.training.config import REGULARIZED
from keras_gradreg.training.config import ATTACK_STEPS
from keras_gradreg.training.config import STRATEGIES
from keras_gradreg.training.config import TRAINING_METHODS
from keras_gradreg.training.config import TrainConfig
from keras_gradreg.training.config import settings
from keras_gradreg.training.config import step_jit_compile
from keras_gradreg.training.config import upgrade_settings
from keras_gradreg.training.config import check_config
from keras_gradreg.training.recipe import build
from keras_gradreg.training.recipe import compiled
from keras_gradreg.training.recipe import wrap
from keras_gradreg.training.recipe import test_images
from keras_gradreg.training.run_dir import BACKUP_DIR
from keras_gradreg.training.run_dir import HISTORY_FILE
from keras_gradreg.training.run_dir import MODEL_FILE
from keras_gradreg.training.run_dir import SETTINGS_FILE
from keras_gradreg.training.run_dir import STATE_FILE
from keras_gradreg.training.run_dir import TIME_FILE
from keras_gradreg.training.run_dir import RunFileError
from keras_gradreg.training.run_dir import check_model_dir
from keras_gradreg.training.run_dir import check_settings
from keras_gradreg.training.run_dir import finished_run
from keras_gradreg.training.run_dir import is_finished
from keras_gradreg.training.run_dir import training_seconds
from keras_gradreg.training.runner import train

__all__ = (
    "ADVERSARIAL",
    "ATTACK_STEPS",
    "BACKUP_DIR",
    "build",
    "check_model_dir",
    "check_config",
    "check_settings",
    "compiled",
    "DEFAULT_COORDINATOR_TIMEOUT",
    "finished_run",
    "HISTORY_FILE",
    "is_finished",
    "MODEL_FILE",
    "MONITOR_IMAGES",
    "OPTIMIZERS",
    "PAPER_SCHEDULE",
    "PENALISED",
    "REGULARIZED",
    "RunFileError",
    "SCHEDULES",
    "settings",
    "SETTINGS_FILE",
    "STATE_FILE",
    "step_jit_compile",
    "STRATEGIES",
    "test_images",
    "TIME_FILE",
    "train",
    "TrainConfig",
    "upgrade_settings",
    "training_seconds",
    "TRAINING_METHODS",
    "wrap",
)

__getattr__ = deprecation.module_getattr("keras_gradreg.training")
"""Names this package had before 0.8 (deprecation.RENAMED), with a DeprecationWarning."""
