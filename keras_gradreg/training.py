"""Training runs as the example scripts launch them: resumable, logged, never clobbering.

`train(config)` builds the data and the model, trains with the chosen method
(plain, the finite-difference penalty, its double-backprop twin, or adversarial
training: PGD, fast or free), logs to TensorBoard and CSV, saves `model.keras` and the wall-clock training
time in `config.model_dir`, and resumes from the last completed epoch if a previous
run with the same directory was interrupted.

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
"""

import contextlib
import csv
import dataclasses
import glob
import hashlib
import io
import json
import math
import os
import shutil
import socket
import tempfile
import time
import warnings
import zipfile
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from keras_gradreg import adversarial_training
from keras_gradreg import data as data_lib
from keras_gradreg import files
from keras_gradreg import model as model_lib
from keras_gradreg import models as models_lib
from keras_gradreg import penalty as penalty_lib
from keras_gradreg import primitives
from keras_gradreg import validation

TRAINING_METHODS = ("plain", "gradreg", "double_backprop", "pgd_at", "fgsm_at", "n_fgsm", "free_at")
"""What `--method` trains (the penalty's own `kg.METHODS` are its two estimators)."""
ADVERSARIAL = ("pgd_at", "fgsm_at", "n_fgsm", "free_at")
"""The adversarial-training methods (keras_gradreg.adversarial_training): PGD (Madry et al.
2018), FGSM from a random start (Wong et al. 2020), N-FGSM (de Jorge et al. 2022), free
(Shafahi et al. 2019)."""
SINGLE_STEP = ("fgsm_at", "n_fgsm")
"""Single-step methods: SingleStepAdversarialModel, on TensorFlow and JAX, with at_regularizer."""
TENSORFLOW_ONLY = ("pgd_at", "free_at")
MONITOR_IMAGES = 256
"""Held-out test images on which adversarial training's RobustnessMonitor checks, each
epoch, PGD and FGSM accuracy (catastrophic overfitting)."""
STRATEGIES = ("default", "mirrored", "data_parallel")
""""mirrored": tf.distribute.MirroredStrategy over one machine's devices (TensorFlow);
"data_parallel": keras.distribution.DataParallel over every device of every process (JAX),
the path Keras 3 supports across machines. MultiWorkerMirroredStrategy is left out: Keras 3
`fit` fails under it (keras-team/keras#20585)."""
DEFAULT_COORDINATOR_TIMEOUT = 120
"""Seconds a process waits for the coordinator (and the others) before giving up."""
SCHEDULES = ("constant", "paper")
PAPER_SCHEDULE = ((0.3, 0.2), (0.6, 0.04), (0.8, 0.008))
"""The paper's CIFAR schedule (x0.2 at epochs 60, 120, 160 of 200), as fractions of the run."""
MODEL_FILE, TIME_FILE, SETTINGS_FILE = "model.keras", "training_time.json", "settings.json"
HISTORY_FILE, BACKUP_DIR, STATE_FILE = "history.csv", "backup", "state.json"
"""A run's files in model_dir; BACKUP_DIR/STATE_FILE names the last completed epoch's
checkpoint, BACKUP_DIR/epoch-E.weights.h5."""


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
    attack_norm: str = "linf"
    difference: str = "forward"
    penalty_every: int = 1
    at_epsilon: float = 0.3
    at_norm: str = "linf"
    at_ramp_epochs: int = 5
    at_regularizer: str = "none"
    at_regularizer_weight: float = 0.0
    at_steps: int = adversarial_training.AT_STEPS
    free_replays: int = adversarial_training.FREE_REPLAYS
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
    coordinator_address: Optional[str] = None
    num_processes: int = 1
    process_id: int = 0
    coordinator_timeout: int = DEFAULT_COORDINATOR_TIMEOUT
    data_dir: Optional[str] = None
    download: bool = False
    train_limit: Optional[int] = None
    overwrite: bool = False


class RunFileError(ValueError):
    """A file of a run cannot be read; the message names it and the way out."""


def validate(config: TrainConfig) -> TrainConfig:
    """Raises ValueError naming the first bad setting, before anything is built.

    Returns:
      The config with its numbers as Python ints and floats (NumPy scalars are fine).
    """
    choices = {"dataset": tuple(data_lib.DATASETS), "model": tuple(models_lib.MODELS),
               "activation": models_lib.ACTIVATIONS, "method": TRAINING_METHODS,
               "at_norm": primitives.BALL_NORMS,
               "at_regularizer": adversarial_training.AT_REGULARIZERS,
               "strategy": STRATEGIES, "schedule": SCHEDULES, "optimizer": ("adam", "sgd"),
               "attack_norm": penalty_lib.ATTACK_NORMS, "difference": penalty_lib.DIFFERENCES}
    for field, allowed in choices.items():
        validation.check_choice(field, getattr(config, field), allowed)
    whole = dict(low=1, low_open=False, integer=True)
    numbers = {"epochs": whole, "batch_size": whole, "learning_rate": {}, "h": {},
               "weight_decay": dict(low_open=False), "seed": dict(low_open=False, integer=True)}
    if config.method in ADVERSARIAL:
        shape = data_lib.DATASETS[config.dataset].image_shape
        high = primitives.max_radius(config.at_norm, 0.0, 1.0, math.prod(shape))
        hint = ("(an l_inf radius in the [0, 1] pixel range; an l2 radius needs --at_norm=l2)"
                if config.at_norm == "linf" else f"(at most the l2 diameter of [0, 1]^{shape})")
        numbers.update(at_epsilon=dict(high=high, hint=hint),
                       at_ramp_epochs=dict(low_open=False, integer=True, hint="(0: no ramp)"),
                       at_steps=whole, free_replays=whole,
                       at_regularizer_weight=dict(low_open=False))
    checked = {field: validation.check_number(field, getattr(config, field), **rules)
               for field, rules in numbers.items()}
    _check_regularizer(config)
    checked["penalty_weight"] = model_lib.validate_penalty_weight(config.penalty_weight)
    checked["penalty_every"] = model_lib.validate_penalty_every(config.penalty_every)
    checked.update(_check_processes(config))
    if config.train_limit is not None:
        checked["train_limit"] = validation.check_number(
            "train_limit", config.train_limit, low=checked["batch_size"], low_open=False,
            integer=True, hint="(at least batch_size)")
    return dataclasses.replace(config, **checked)


def _check_regularizer(config: TrainConfig) -> None:
    """ValueError unless the adversarial-training options fit the method."""
    if config.at_regularizer != "none" and config.method not in SINGLE_STEP:
        raise ValueError(f"at_regularizer={config.at_regularizer!r} regularises single-step "
                         f"training (method {' or '.join(SINGLE_STEP)}); method is {config.method!r}.")
    if config.method in SINGLE_STEP and (config.at_regularizer == "none") != (
            config.at_regularizer_weight == 0):
        raise ValueError(f"at_regularizer={config.at_regularizer!r} with at_regularizer_weight="
                         f"{config.at_regularizer_weight!r}: a regulariser needs a weight > 0, and "
                         "a weight > 0 needs a regulariser.")
    if config.at_norm != "linf" and config.method == "free_at":
        raise ValueError(f"at_norm={config.at_norm!r}: free_at trains in l_inf only.")


def _check_processes(config: TrainConfig) -> dict:
    """The backend each setting needs, and the process layout; ValueError naming the first bad one."""
    backend = keras.backend.backend()
    needs = {"data_parallel": "jax", "mirrored": "tensorflow"}.get(config.strategy)
    if needs and backend != needs:
        raise ValueError(f"strategy={config.strategy!r} runs on the {needs} backend; Keras runs "
                         f"on {backend!r}. Set KERAS_BACKEND={needs} before starting.")
    if config.method in TENSORFLOW_ONLY and backend != "tensorflow":
        raise ValueError(f"method={config.method!r} runs on the tensorflow backend; Keras runs "
                         f"on {backend!r}.")
    whole = dict(low=1, low_open=False, integer=True)
    checked = {"num_processes": validation.check_number("num_processes", config.num_processes, **whole),
               "coordinator_timeout": validation.check_number(
                   "coordinator_timeout", config.coordinator_timeout, **whole)}
    checked["process_id"] = validation.check_number(
        "process_id", config.process_id, low_open=False, high=checked["num_processes"] - 1,
        integer=True, hint=f"(0 .. num_processes - 1 = {checked['num_processes'] - 1})")
    if checked["num_processes"] > 1 and config.strategy != "data_parallel":
        raise ValueError(f"num_processes={checked['num_processes']} needs strategy='data_parallel' "
                         f"(KERAS_BACKEND=jax); strategy is {config.strategy!r}.")
    if checked["num_processes"] > 1 or config.coordinator_address is not None:
        host, _, port = str(config.coordinator_address).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"coordinator_address={config.coordinator_address!r} is not HOST:PORT "
                             "(the address of process 0, e.g. 10.0.0.1:1234); it is needed when "
                             "num_processes > 1.")
    return checked


def _start_processes(config: TrainConfig) -> None:
    """Joins the processes of a multi-process run (JAX), or raises ConnectionError in time.

    Every process then checks that all were started with the same settings.
    """
    if config.strategy != "data_parallel" or config.num_processes == 1:
        return
    import jax  # the JAX backend is checked in validate()
    from jax.experimental import multihost_utils

    where = (f"process {config.process_id} of {config.num_processes}, coordinator "
             f"{config.coordinator_address}")
    if config.process_id > 0:  # JAX aborts the process where the coordinator is unreachable
        _wait_for(config.coordinator_address, config.coordinator_timeout, where)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives
    try:
        jax.distributed.initialize(config.coordinator_address, config.num_processes,
                                   config.process_id,
                                   initialization_timeout=config.coordinator_timeout)
    except Exception as error:  # JAX raises several kinds (XlaRuntimeError, RuntimeError)
        raise ConnectionError(
            f"{where}: the processes did not all connect within {config.coordinator_timeout} s "
            f"({type(error).__name__}: {str(error).splitlines()[0][:300]}). Start process 0 "
            "on the coordinator's host, the same num_processes everywhere, and check that the "
            "address is reachable.") from error
    mine = json.dumps(dict(settings(config), num_processes=config.num_processes), sort_keys=True)
    digest = np.frombuffer(hashlib.sha256(mine.encode()).digest(), np.uint8)
    every = np.asarray(multihost_utils.process_allgather(digest))
    differ = [i for i, d in enumerate(every.reshape(-1, digest.size)) if not np.array_equal(d, digest)]
    if differ:
        raise ValueError(f"{where}: processes {differ} were started with other settings than this "
                         "one; start every process with the same flags but --process_id.")


def _wait_for(address: str, timeout: float, where: str) -> None:
    """Returns once a TCP connection to HOST:PORT succeeds; ConnectionError after `timeout` s."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return
        except OSError as error:
            if time.monotonic() > deadline:
                raise ConnectionError(
                    f"{where}: nothing answered at {address} within {timeout} s ({error}). "
                    "Start process 0 there first (it hosts the coordinator), and check the "
                    "address and the firewall.") from error
            time.sleep(0.5)


def _is_chief(config: TrainConfig) -> bool:
    return config.process_id == 0


def _agree(config: TrainConfig, values: list) -> list:
    """The chief's integers, in every process (a no-op in a single-process run)."""
    if config.num_processes == 1:
        return values
    from jax.experimental import multihost_utils

    return [int(v) for v in multihost_utils.broadcast_one_to_all(np.asarray(values, np.int64))]


def _distribution(config: TrainConfig):
    """The context a run builds and fits its model in."""
    if config.strategy == "data_parallel":
        import jax

        return keras.distribution.DataParallel(devices=jax.devices()).scope()
    return (tf.distribute.MirroredStrategy() if config.strategy == "mirrored"
            else tf.distribute.get_strategy()).scope()


def _optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The run's optimizer; the paper's schedule counts optimizer updates (free adversarial
    training makes free_replays of them per batch)."""
    if config.method == "free_at":
        steps_per_epoch *= config.free_replays
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
        return adversarial_training.AdversarialTrainingModel.from_model(
            base, epsilon=config.at_epsilon, steps=config.at_steps, seed=config.seed,
            attack_norm=config.at_norm)
    if config.method in SINGLE_STEP:
        return adversarial_training.SingleStepAdversarialModel.from_model(
            base, epsilon=config.at_epsilon, attack_norm=config.at_norm,
            method="fgsm_rs" if config.method == "fgsm_at" else "n_fgsm",
            regularizer=config.at_regularizer, regularizer_weight=config.at_regularizer_weight,
            h=config.h, seed=config.seed)
    if config.method == "free_at":
        return adversarial_training.FreeAdversarialTrainingModel.from_model(
            base, epsilon=config.at_epsilon, replays=config.free_replays, seed=config.seed)
    method = "double_backprop" if config.method == "double_backprop" else "finite_difference"
    return model_lib.GradRegModel.from_model(
        base, penalty_weight=config.penalty_weight, h=config.h, attack_norm=config.attack_norm,
        difference=config.difference, method=method, penalty_every=config.penalty_every)


def _path(model_dir: str, *names: str) -> str:
    return os.path.join(model_dir, *names)


def _read_json(path: str) -> dict:
    """A run's JSON file, or RunFileError naming it."""
    try:
        with open(path) as f:
            content = json.load(f)
        if not isinstance(content, dict):
            raise ValueError("not a JSON object")
        return content
    except (OSError, ValueError) as error:
        raise RunFileError(
            f"{path} cannot be read ({type(error).__name__}: {error}); remove the run with "
            "overwrite=True (--overwrite) to start afresh, or choose another model_dir."
        ) from error


def _readable_model(path: str) -> bool:
    """Whether a .keras file is a whole zip archive (a kill during its write leaves less)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def training_seconds(model_dir: str) -> Optional[float]:
    """Wall-clock seconds the finished run in model_dir trained, or None if unknown.

    Raises:
      RunFileError: the time file exists but cannot be read.
    """
    path = _path(model_dir, TIME_FILE)
    if not os.path.exists(path):
        return None
    try:
        return float(_read_json(path)["seconds"])
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, RunFileError):
            raise
        raise RunFileError(f"{path} holds no training time ({error!r}); remove the run with "
                           "--overwrite to start afresh.") from error


def settings(config: TrainConfig) -> dict:
    """The settings a trained model depends on: not where files go, nor the unused ones."""
    unused = {"model_dir", "overwrite", "download", "data_dir", "coordinator_address",
              "num_processes", "process_id", "coordinator_timeout"}
    if config.method not in ADVERSARIAL:
        unused |= {"at_epsilon", "at_ramp_epochs"}
    if config.method != "pgd_at":
        unused.add("at_steps")
    if config.method != "free_at":
        unused.add("free_replays")
    if config.method in ("plain",) + ADVERSARIAL:
        unused |= {"penalty_weight", "h", "attack_norm", "difference", "penalty_every"}
    if config.method in SINGLE_STEP and config.at_regularizer == "gradient_penalty":
        unused.discard("h")
    stored = {k: v for k, v in dataclasses.asdict(config).items() if k not in unused}
    # Added in 0.4 with their old meaning as defaults: older runs' settings still match.
    for field, old in (("at_norm", "linf"), ("at_regularizer", "none"), ("at_regularizer_weight", 0.0)):
        if stored.get(field) == old:
            del stored[field]
    return stored


def check_settings(config: TrainConfig) -> None:
    """Raises ValueError if config.model_dir holds a run (finished or not) of other settings.

    A model of unknown settings (no settings file beside it) counts as different.
    Settings files written before `norm` was renamed `attack_norm` are read correctly.
    """
    path = _path(config.model_dir, SETTINGS_FILE)
    if not os.path.exists(path):
        if os.path.exists(_path(config.model_dir, MODEL_FILE)):
            raise ValueError(f"{config.model_dir} holds a model without {SETTINGS_FILE}, so its "
                             "settings are unknown; choose another model_dir or pass overwrite=True.")
        return
    stored = _read_json(path)
    if "norm" in stored:  # the penalised dual norm, before the rename
        stored["attack_norm"] = penalty_lib.attack_norm_of_dual(stored.pop("norm"))
    wanted = settings(config)
    differ = [f"{k}={stored.get(k)!r} there, {wanted.get(k)!r} asked"
              for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k)]
    if differ:
        raise ValueError(f"{config.model_dir} holds a run with other settings ({'; '.join(differ)}); "
                         "choose another model_dir or pass overwrite=True (--overwrite) to start afresh.")


@dataclasses.dataclass
class _Resume:
    """Where an unfinished run stands: its last completed epoch's checkpoint."""

    epochs: int
    seconds: float
    weights: Optional[str]  # None before the first completed epoch


def _resume_point(model_dir: str) -> _Resume:
    """The checkpoint of an unfinished run (epoch 0 if none), or RunFileError."""
    backup = _path(model_dir, BACKUP_DIR)
    state_path = _path(backup, STATE_FILE)
    if not os.path.exists(state_path):
        if glob.glob(_path(backup, "*.h5")):
            raise RunFileError(f"{backup} holds weights but no {STATE_FILE} (a backup of an older "
                               "version, or a damaged one); start afresh with --overwrite.")
        return _Resume(0, 0.0, None)
    state = _read_json(state_path)
    try:
        weights = _path(backup, state["weights"])
        resume = _Resume(int(state["epochs"]), float(state["seconds"]), weights)
    except (KeyError, TypeError, ValueError) as error:
        raise RunFileError(f"{state_path} is not a checkpoint record ({error!r}); start afresh "
                           "with --overwrite.") from error
    if not os.path.exists(weights):
        raise RunFileError(f"{state_path} names {weights}, which is missing; start afresh with "
                           "--overwrite.")
    return resume


def finished_run(config: TrainConfig) -> Optional[tuple]:
    """(loaded model, training seconds) of the finished run of `config`, or None.

    A model file that cannot be read while the run's checkpoint is still there (a kill
    while the final model was being written) counts as unfinished: `train` resumes it.

    Raises:
      ValueError: config.model_dir holds a run with other settings.
      RunFileError: a file of the run cannot be read.
    """
    if not is_finished(config):
        return None
    model = keras.models.load_model(_path(config.model_dir, MODEL_FILE))
    return model, training_seconds(config.model_dir)


def is_finished(config: TrainConfig) -> bool:
    """Whether model_dir holds the finished run of `config`: finished_run's checks and
    errors, without loading the model."""
    model_path = _path(config.model_dir, MODEL_FILE)
    if not os.path.exists(model_path):
        return False
    check_settings(config)
    if not _readable_model(model_path):
        if _resume_point(config.model_dir).weights:
            return False
        raise RunFileError(f"{model_path} is not a readable .keras file (not a whole zip archive) "
                           "and there is no checkpoint to resume from; train it again with "
                           "overwrite=True (--overwrite).")
    training_seconds(config.model_dir)  # raises if its time file is unreadable
    return True


def test_images(dataset: str, num_images: int, *, data_dir: Optional[str] = None,
                download: bool = False) -> tuple:
    """The first `num_images` test images and labels of a dataset, as NumPy arrays."""
    test_split = data_lib.DATASETS[dataset].splits[1]
    return data_lib.dataset_arrays(data_lib.load_dataset(
        dataset, test_split, batch_size=256, data_dir=data_dir, download=download, limit=num_images))


@contextlib.contextmanager
def _written(path: str, writes: bool):
    """A temporary path to save to: it replaces `path` whole if this process `writes`,
    else it is thrown away. Every process of a multi-process JAX run must save together
    (the values are gathered collectively); only the chief keeps the file."""
    if writes:
        with files.replaced_atomically(path) as temporary:
            yield temporary
    else:
        with tempfile.TemporaryDirectory() as folder:
            yield os.path.join(folder, os.path.basename(path))


@contextlib.contextmanager
def _from_chief(path: Optional[str], shared: bool):
    """The chief's file `path`, readable in every process: itself in a single-process
    run, else a local copy of the bytes the chief sends (so that all processes load the
    same checkpoint together, and the others need no access to model_dir)."""
    if not shared:
        yield path
        return
    from jax.experimental import multihost_utils

    data = np.fromfile(path, np.uint8) if path else np.zeros(0, np.uint8)
    size = int(multihost_utils.broadcast_one_to_all(np.int64(data.size)))
    data = data if path else np.zeros(size, np.uint8)
    data = np.asarray(multihost_utils.broadcast_one_to_all(data), np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, "checkpoint.weights.h5")
        data.tofile(local)
        yield local


class _Clock(keras.callbacks.Callback):
    """The wall time of each epoch's steps: from the epoch's start to the first epoch-end
    callback (put it first), so logging, monitoring and checkpointing do not count."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self._start


class _Checkpoint(keras.callbacks.Callback):
    """Saves weights and optimizer state at each epoch's end, whole or not at all.

    The weights go to BACKUP_DIR/epoch-E.weights.h5, then STATE_FILE is replaced to name
    them (with the epochs done and the training seconds so far), then older checkpoints
    are removed: at every moment STATE_FILE names a complete checkpoint.

    In a multi-process run only the chief `writes` (and reads); on resume it sends the
    weights and optimizer state to the other processes (`shared`), which need no access
    to model_dir.
    """

    def __init__(self, model_dir: str, resume: _Resume, clock: "_Clock", writes: bool = True,
                 shared: bool = False):
        super().__init__()
        self.backup = _path(model_dir, BACKUP_DIR)
        self.resume, self.clock, self.writes, self.shared = resume, clock, writes, shared
        self.seconds = resume.seconds

    def on_train_begin(self, logs=None):
        if self.resume.epochs == 0:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        with _from_chief(self.resume.weights, self.shared) as weights:
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
        with _written(_path(self.backup, name), self.writes) as temporary:
            self.model.save_weights(temporary)
        if not self.writes:
            return
        state = {"epochs": epoch + 1, "seconds": self.seconds, "weights": name}
        files.write_text(_path(self.backup, STATE_FILE), json.dumps(state))
        for old in glob.glob(_path(self.backup, "epoch-*.weights.h5")):
            if os.path.basename(old) != name:
                os.remove(old)


def _trim_history(path: str, epochs: int) -> None:
    """Keeps the history rows of the first `epochs` epochs (a killed epoch may have left one)."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) < epochs]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(kept if epochs else [])
    files.write_text(path, out.getvalue())


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

    In a multi-process run (strategy="data_parallel", num_processes > 1) every process
    runs this with the same settings; process 0, the chief, alone reads and writes
    model_dir, and the others receive its decisions and, on resume, its weights.
    """
    config = validate(config)
    _start_processes(config)
    if _is_chief(config):
        failed, resume = 1, _Resume(0, 0.0, None)
        try:
            resume = _prepare(config)
            failed = 0
        finally:  # the others wait for this, also when preparing failed
            _agree(config, [failed, resume.epochs])
    else:
        failed, epochs = _agree(config, [1, 0])
        if failed:
            raise RuntimeError(f"process {config.process_id}: process 0 (the chief) stopped "
                               "before training; its output says why.")
        resume = _Resume(epochs, 0.0, None)
    keras.utils.set_random_seed(config.seed)
    policy = keras.mixed_precision.global_policy()
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        return _fit(config, resume, verbose if _is_chief(config) else 0)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def _prepare(config: TrainConfig) -> _Resume:
    """The chief's part of `train` before training: checks model_dir, records the
    settings, and finds where to resume."""
    model_path = _path(config.model_dir, MODEL_FILE)
    if config.overwrite:  # asked to start afresh
        for stale in (MODEL_FILE, TIME_FILE, HISTORY_FILE, SETTINGS_FILE):
            if os.path.exists(_path(config.model_dir, stale)):
                os.remove(_path(config.model_dir, stale))
        shutil.rmtree(_path(config.model_dir, BACKUP_DIR), ignore_errors=True)
    elif is_finished(config):
        raise FileExistsError(
            f"{model_path} already exists (a finished run); pass overwrite=True "
            "(--overwrite) to train it again, or choose another model_dir."
        )
    else:
        check_settings(config)
    resume = _resume_point(config.model_dir)
    if os.path.exists(model_path):
        warnings.warn(f"{model_path} is unreadable (killed while it was written?); resuming "
                      f"from the checkpoint of epoch {resume.epochs}.", stacklevel=2)
    os.makedirs(config.model_dir, exist_ok=True)
    files.write_text(_path(config.model_dir, SETTINGS_FILE), json.dumps(settings(config), indent=1))
    _trim_history(_path(config.model_dir, HISTORY_FILE), resume.epochs)
    return resume


def _fit(config: TrainConfig, resume: _Resume, verbose: int) -> tuple:
    # A run killed after its last epoch still builds from one epoch of data.
    first = min(resume.epochs, config.epochs - 1)
    train_data, steps = data_lib.training_epochs(
        config.dataset, data_lib.DATASETS[config.dataset].splits[0], batch_size=config.batch_size,
        seed=config.seed, first_epoch=first, epochs=config.epochs, cutout=config.cutout,
        data_dir=config.data_dir, download=config.download, limit=config.train_limit)
    chief = _is_chief(config)
    clock = _Clock()
    checkpoint = _Checkpoint(config.model_dir, resume, clock, writes=chief,
                             shared=config.num_processes > 1)
    callbacks = [
        keras.callbacks.TensorBoard(_path(config.model_dir, "logs")),
        keras.callbacks.CSVLogger(_path(config.model_dir, HISTORY_FILE), append=True),
    ] if chief else []
    if config.method in ADVERSARIAL:
        x, y = test_images(config.dataset, MONITOR_IMAGES, data_dir=config.data_dir,
                           download=config.download)
        callbacks = [adversarial_training.EpsilonRamp(config.at_ramp_epochs),
                     adversarial_training.RobustnessMonitor(x, y, config.at_epsilon,
                                                            attack_norm=config.at_norm)] + callbacks
    # The clock first; the checkpoint last: an epoch is checkpointed once everything
    # else has recorded it (a row the CSV got before a kill is trimmed on resume, see
    # _trim_history).
    callbacks = [clock] + callbacks + [checkpoint]
    with _distribution(config):
        model = build(config)
        model.compile(optimizer=_optimizer(config, steps),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"], jit_compile=config.jit_compile)
        # shuffle=False: each epoch's order is already a function of (seed, epoch), and
        # Keras ignores (with a warning) shuffle=True for a dataset.
        history = model.fit(train_data, epochs=config.epochs, initial_epoch=resume.epochs,
                            steps_per_epoch=steps, callbacks=callbacks, verbose=verbose,
                            shuffle=False)
    # The time first, then the model (whose presence marks the run finished), then
    # the checkpoint goes: a kill between any two leaves a run that resumes or is done.
    if chief:
        files.write_text(_path(config.model_dir, TIME_FILE),
                         json.dumps({"seconds": checkpoint.seconds, "epochs": config.epochs}))
    with _written(_path(config.model_dir, MODEL_FILE), chief) as temporary:
        model.save(temporary)
    if chief:
        shutil.rmtree(_path(config.model_dir, BACKUP_DIR), ignore_errors=True)
    return model, history, checkpoint.seconds
