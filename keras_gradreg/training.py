"""Training runs as the example scripts launch them: resumable, logged, never clobbering.

`train(config)` builds the data and the model, trains with the chosen method
(plain, the finite-difference penalty, its double-backprop twin, or PGD adversarial
training), logs to TensorBoard and CSV, saves `model.keras` and the wall-clock training
time in `config.model_dir`, and resumes from the last completed epoch if a previous
run with the same directory was interrupted.
"""

import dataclasses
import json
import os
import shutil
import time
from typing import Optional

import keras
import tensorflow as tf

from keras_gradreg import adversarial_training
from keras_gradreg import data as data_lib
from keras_gradreg import models as models_lib
from keras_gradreg import penalty as penalty_lib
from keras_gradreg import model as model_lib

METHODS = ("plain", "gradreg", "double_backprop", "pgd_at")
STRATEGIES = ("default", "mirrored")
"""MultiWorkerMirroredStrategy is left out: Keras 3 `fit` fails under it (keras-team/keras#20585);
the README shows the distributed loop that works."""
SCHEDULES = ("constant", "paper")
PAPER_SCHEDULE = ((0.3, 0.2), (0.6, 0.04), (0.8, 0.008))
"""The paper's CIFAR schedule (x0.2 at epochs 60, 120, 160 of 200), as fractions of the run."""
MODEL_FILE, TIME_FILE, SETTINGS_FILE = "model.keras", "training_time.json", "settings.json"


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on; the example scripts' flags map onto it."""

    model_dir: str
    dataset: str = "offline_mnist"
    model: str = "small_cnn"
    activation: str = "relu"
    method: str = "gradreg"
    penalty_weight: float = 1.0
    h: float = penalty_lib.DEFAULT_H
    norm: str = "l1"
    difference: str = "forward"
    penalty_every: int = 1
    at_epsilon: float = 0.3
    at_ramp_epochs: int = 5
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "constant"
    weight_decay: float = 0.0
    cutout: bool = False
    strategy: str = "default"
    mixed_precision: bool = False
    jit_compile: bool = False
    seed: int = 0
    data_dir: Optional[str] = None
    download: bool = False
    train_limit: Optional[int] = None
    overwrite: bool = False


def validate(config: TrainConfig) -> None:
    """Raises ValueError naming the first bad setting, before anything is built."""
    choices = {"dataset": tuple(data_lib.DATASETS), "model": tuple(models_lib.MODELS),
               "activation": models_lib.ACTIVATIONS, "method": METHODS,
               "strategy": STRATEGIES, "schedule": SCHEDULES, "optimizer": ("adam", "sgd"),
               "norm": penalty_lib.NORMS, "difference": penalty_lib.DIFFERENCES}
    for field, allowed in choices.items():
        value = getattr(config, field)
        if value not in allowed:
            raise ValueError(f"{field}={value!r} is not supported; use one of {allowed}.")
    positive = {"epochs": config.epochs, "batch_size": config.batch_size,
                "learning_rate": config.learning_rate, "h": config.h}
    for field, value in positive.items():
        if not value > 0:
            raise ValueError(f"{field}={value!r} must be > 0.")
    if config.penalty_weight < 0 or config.weight_decay < 0:
        raise ValueError(f"penalty_weight={config.penalty_weight!r} and weight_decay="
                         f"{config.weight_decay!r} must be >= 0.")
    model_lib.validate_penalty_every(config.penalty_every)
    if config.method == "pgd_at" and not 0 < config.at_epsilon <= 1:
        raise ValueError(f"at_epsilon={config.at_epsilon!r} must be in (0, 1], the [0, 1] "
                         "pixel range.")
    if config.method == "pgd_at" and not config.at_ramp_epochs >= 1:
        raise ValueError(f"at_ramp_epochs={config.at_ramp_epochs!r} must be >= 1.")
    if config.train_limit is not None and config.train_limit < config.batch_size:
        raise ValueError(f"train_limit={config.train_limit!r} must be at least batch_size "
                         f"({config.batch_size}).")


def _strategy(name: str) -> tf.distribute.Strategy:
    return tf.distribute.MirroredStrategy() if name == "mirrored" else tf.distribute.get_strategy()


def _optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    learning_rate = config.learning_rate
    if config.schedule == "paper":
        boundaries = [int(f * config.epochs * steps_per_epoch) for f, _ in PAPER_SCHEDULE]
        values = [config.learning_rate] + [config.learning_rate * m for _, m in PAPER_SCHEDULE]
        learning_rate = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=False,
                                    weight_decay=config.weight_decay or None)
    return keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay) \
        if config.weight_decay else keras.optimizers.Adam(learning_rate)


def build(config: TrainConfig) -> keras.Model:
    """The model of a run, wrapped for its method, not yet compiled."""
    info = data_lib.DATASETS[config.dataset]
    base = models_lib.build_model(config.model, info.image_shape, info.num_classes, config.activation)
    if config.method == "plain":
        return base
    if config.method == "pgd_at":
        return adversarial_training.AdversarialTrainingModel.from_model(base, epsilon=config.at_epsilon)
    method = "double_backprop" if config.method == "double_backprop" else "finite_difference"
    return model_lib.GradRegModel.from_model(
        base, penalty_weight=config.penalty_weight, h=config.h, norm=config.norm,
        difference=config.difference, method=method, penalty_every=config.penalty_every)


class _TrainingClock(keras.callbacks.Callback):
    """Adds each epoch's wall-clock seconds to a JSON file, so resumed runs add up."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def elapsed(self) -> float:
        return training_seconds(os.path.dirname(self.path)) or 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = self.elapsed() + time.perf_counter() - self._start
        with open(self.path + ".tmp", "w") as f:
            json.dump({"seconds": seconds, "epochs": epoch + 1}, f)
        os.replace(self.path + ".tmp", self.path)


def training_seconds(model_dir: str) -> Optional[float]:
    """Wall-clock seconds the run in model_dir has trained so far, or None if unknown."""
    path = os.path.join(model_dir, TIME_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return float(json.load(f)["seconds"])


def settings(config: TrainConfig) -> dict:
    """The settings a trained model depends on: not where files go, nor the unused ones."""
    unused = {"model_dir", "overwrite", "download", "data_dir"}
    if config.method != "pgd_at":
        unused |= {"at_epsilon", "at_ramp_epochs"}
    if config.method in ("plain", "pgd_at"):
        unused |= {"penalty_weight", "h", "norm", "difference", "penalty_every"}
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in unused}


def check_settings(config: TrainConfig) -> None:
    """Raises ValueError if config.model_dir holds a run (finished or not) of other settings.

    A model of unknown settings (no settings file beside it) counts as different.
    """
    path = os.path.join(config.model_dir, SETTINGS_FILE)
    if not os.path.exists(path):
        if os.path.exists(os.path.join(config.model_dir, MODEL_FILE)):
            raise ValueError(f"{config.model_dir} holds a model without {SETTINGS_FILE}, so its "
                             "settings are unknown; choose another model_dir or pass overwrite=True.")
        return
    with open(path) as f:
        stored = json.load(f)
    wanted = settings(config)
    differ = [f"{k}={stored.get(k)!r} there, {wanted.get(k)!r} asked"
              for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k)]
    if differ:
        raise ValueError(f"{config.model_dir} holds a run with other settings ({'; '.join(differ)}); "
                         "choose another model_dir or pass overwrite=True (--overwrite) to start afresh.")


def finished_run(config: TrainConfig) -> Optional[tuple]:
    """(loaded model, training seconds) of the finished run of `config`, or None.

    Raises:
      ValueError: config.model_dir holds a run with other settings.
    """
    model_path = os.path.join(config.model_dir, MODEL_FILE)
    if not os.path.exists(model_path):
        return None
    check_settings(config)
    return keras.models.load_model(model_path), training_seconds(config.model_dir)


def test_images(dataset: str, num_images: int, *, data_dir: Optional[str] = None,
                download: bool = False) -> tuple:
    """The first `num_images` test images and labels of a dataset, as NumPy arrays."""
    test_split = data_lib.DATASETS[dataset].splits[1]
    return data_lib.dataset_arrays(data_lib.load_dataset(
        dataset, test_split, batch_size=256, data_dir=data_dir, download=download, limit=num_images))


def train(config: TrainConfig, verbose: int = 2) -> tuple:
    """Runs (or resumes) one training run.

    Returns:
      (trained model, keras History of this process's epochs, total training seconds).

    An unfinished run of the same settings in model_dir resumes from its last completed
    epoch; overwrite=True starts afresh instead, replacing whatever model_dir holds.

    Raises:
      FileExistsError: model_dir already holds a finished model and overwrite is False.
      ValueError: model_dir holds an unfinished run with other settings and overwrite is False.
    """
    validate(config)
    model_path = os.path.join(config.model_dir, MODEL_FILE)
    if os.path.exists(model_path) and not config.overwrite:
        raise FileExistsError(
            f"{model_path} already exists (a finished run); pass overwrite=True "
            "(--overwrite) to train it again, or choose another model_dir."
        )
    clock = _TrainingClock(os.path.join(config.model_dir, TIME_FILE))
    history_path = os.path.join(config.model_dir, "history.csv")
    backup_dir = os.path.join(config.model_dir, "backup")
    if config.overwrite:  # asked to start afresh
        for stale in (clock.path, history_path, os.path.join(config.model_dir, SETTINGS_FILE)):
            if os.path.exists(stale):
                os.remove(stale)
        shutil.rmtree(backup_dir, ignore_errors=True)
    else:
        check_settings(config)
    os.makedirs(config.model_dir, exist_ok=True)
    with open(os.path.join(config.model_dir, SETTINGS_FILE), "w") as f:
        json.dump(settings(config), f, indent=1)
    keras.utils.set_random_seed(config.seed)
    policy = keras.mixed_precision.global_policy()
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        return _fit(config, model_path, clock, history_path, verbose)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def _fit(config: TrainConfig, model_path: str, clock: _TrainingClock, history_path: str,
         verbose: int) -> tuple:
    train_data = data_lib.load_dataset(
        config.dataset, data_lib.DATASETS[config.dataset].splits[0], batch_size=config.batch_size,
        training=True, cutout=config.cutout, seed=config.seed, data_dir=config.data_dir,
        download=config.download, limit=config.train_limit)
    steps = int(train_data.cardinality())
    with _strategy(config.strategy).scope():
        model = build(config)
        model.compile(optimizer=_optimizer(config, max(steps, 1)),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"], jit_compile=config.jit_compile)
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(config.model_dir, "backup")),
        keras.callbacks.TensorBoard(os.path.join(config.model_dir, "logs")),
        keras.callbacks.CSVLogger(history_path, append=True),
        clock,  # last: an epoch counts once everything else has recorded it
    ]
    if config.method == "pgd_at":
        callbacks.append(adversarial_training.EpsilonRamp(config.at_ramp_epochs))
    history = model.fit(train_data, epochs=config.epochs, callbacks=callbacks, verbose=verbose)
    model.save(model_path)
    return model, history, clock.elapsed()
