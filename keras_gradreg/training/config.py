"""What a training run depends on (TrainConfig), checked before anything is built, and
the settings a trained model is recorded with."""

import dataclasses
import math
from typing import Optional

import keras

from keras_gradreg import adversarial_training
from keras_gradreg import data as data_lib
from keras_gradreg import model as model_lib
from keras_gradreg import architectures
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


def step_jit_compile(requested: bool) -> bool:
    """The `jit_compile` a training model is compiled with: `requested` on TensorFlow
    (False there is a tf.function graph), always True on JAX, where Keras without it runs
    each step op by op, compiling every primitive (measured on 2 CPU cores: the small CNN,
    penalised, 3 epochs of 4 steps on 256 digits trained in 10.2 s that way, 3.9 s
    compiled).

    Args:
      requested: TrainConfig.jit_compile (the scripts' --jit_compile).

    Returns:
      Whether to XLA-compile the train step.
    """
    return requested or keras.backend.backend() == "jax"


def validate(config: TrainConfig) -> TrainConfig:
    """Raises ValueError naming the first bad setting, before anything is built.

    Returns:
      The config with its numbers as Python ints and floats (NumPy scalars are fine).
    """
    choices = {"dataset": tuple(data_lib.DATASETS), "model": tuple(architectures.MODELS),
               "activation": architectures.ACTIVATIONS, "method": TRAINING_METHODS,
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
    checked.update(check_processes(config))
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


def check_processes(config: TrainConfig) -> dict:
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
