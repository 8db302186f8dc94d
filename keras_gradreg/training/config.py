"""TrainConfig: every setting of a training run in one dataclass, checked before any work
(check_config), saved with the run (settings.json) and read back by any later version, and the
tables of values each setting takes."""

import dataclasses
import math
from typing import Optional

import keras

from keras_gradreg import architectures
from keras_gradreg import backend
from keras_gradreg import datasets
from keras_gradreg import deprecation
from keras_gradreg import models
from keras_gradreg import penalty as penalty_lib
from keras_gradreg import per_example
from keras_gradreg import regularizers
from keras_gradreg import validation
from keras_gradreg.attacks import ball
from keras_gradreg.attacks import pgd
from keras_gradreg.regularizers import trades

TRAINING_METHODS = ("plain", "gradreg", "double_backprop", "pgd_at", "fgsm_rs", "n_fgsm",
                    "free_at", "trades")
"""What `method` trains: plain; the finite-difference penalty (GradRegModel) or its exact
double-backprop twin; adversarial training: PGD (Madry et al. 2018), FGSM from a random
start (Wong et al. 2020), N-FGSM (de Jorge et al. 2022), free (Shafahi et al. 2019) and
TRADES (Zhang et al. 2019)."""
PENALISED = ("gradreg", "double_backprop")
"""The methods that train with the input-gradient penalty (GradRegModel)."""
ADVERSARIAL = ("pgd_at", "fgsm_rs", "n_fgsm", "free_at", "trades")
"""The adversarial-training methods: trained at `epsilon`, its radius ramped, monitored."""
REGULARIZED = ("pgd_at", "fgsm_rs", "n_fgsm")
"""The methods `regularizer` applies to (AdversarialTrainingModel's attacks)."""
ATTACK_STEPS = {"pgd_at": pgd.TRAINING_STEPS, "trades": trades.STEPS}
"""The methods that take `attack_steps`, and their default."""
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
OPTIMIZERS = ("adam", "sgd")
"""Adam (AdamW with weight decay), or SGD with momentum 0.9 (the paper's)."""
SCHEDULES = ("constant", "paper", "paper_imagenet")
"""Learning-rate schedules: constant; "paper", PAPER_SCHEDULE's steps (CIFAR-10);
"paper_imagenet", PAPER_IMAGENET_SCHEDULE's ramps."""
PAPER_SCHEDULE = ((0.3, 0.2), (0.6, 0.04), (0.8, 0.008))
"""The paper's CIFAR schedule (x0.2 at epochs 60, 120, 160 of 200), as fractions of the run."""
PAPER_IMAGENET_SCHEDULE = ((0, 0.5), (8, 1.0), (15, 0.125), (15, 0.5333), (25, 0.05333),
                           (28, 0.005333), (28, 0.005), (29, 0.0005))
"""The authors' ImageNet schedule (cfinlay/tulip imagenet/example.sh, after fast.ai's
DAWNBench run) as (epoch of 29, multiple of the learning rate), linear between the
points: their per-image learning rates (lr / global batch) of each phase, the 128-, 224-
and 288-pixel phases' batches (512, 192, 128 on four GPUs) folded into one, so that with
--learning_rate 0.25 at --batch_size 256 the rate per image is theirs at every epoch. The
epochs scale with --epochs."""


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on; the example scripts' flags map onto it.

    Runs saved with the names of earlier versions (at_epsilon, "fgsm_at", ...) are read
    through `upgrade_settings`.
    """

    model_dir: str
    dataset: str = "offline_mnist"
    model: str = "small_cnn"
    activation: str = "relu"
    method: str = "gradreg"
    penalty_weight: float = 1.0
    h: float = penalty_lib.DEFAULT_H
    attack_norm: str = per_example.DEFAULT_ATTACK_NORM
    difference: str = "forward"
    penalty_every: int = 1
    penalty_power: int = 2
    clean_weight: float = 1.0
    penalty_warmup: int = 0
    epsilon: float = 0.3
    ramp_epochs: int = 5
    regularizer: str = "none"
    regularizer_weight: float = 0.0
    attack_steps: Optional[int] = None
    replays: int = models.REPLAYS
    trades_beta: float = trades.BETA
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "constant"
    weight_decay: float = 0.0
    l2: float = 0.0
    decay_biases: bool = True
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
    each step op by op, compiling every primitive (several times slower, docs/cost.md).

    Args:
      requested: TrainConfig.jit_compile (the scripts' --jit_compile).

    Returns:
      Whether to XLA-compile the train step.
    """
    return requested or keras.backend.backend() == "jax"


def check_config(config: TrainConfig) -> TrainConfig:
    """Raises ValueError naming the first bad setting, before anything is built.

    Returns:
      The config with its numbers as Python ints and floats (NumPy scalars are fine), and
      attack_steps as the method's default where it was None.
    """
    choices = {"dataset": tuple(datasets.DATASETS), "model": tuple(architectures.MODELS),
               "method": TRAINING_METHODS,
               "attack_norm": per_example.ATTACK_NORMS if config.method not in ADVERSARIAL
               else ball.NORMS,
               "regularizer": regularizers.NAMES, "strategy": STRATEGIES,
               "schedule": SCHEDULES, "optimizer": OPTIMIZERS,
               "difference": penalty_lib.DIFFERENCES}
    for field, allowed in choices.items():
        validation.check_choice(field, getattr(config, field), allowed)
    architectures.check_activation(config.activation)
    whole = dict(low=1, low_open=False, integer=True)
    numbers = {"epochs": whole, "batch_size": whole, "learning_rate": {}, "h": {},
               "weight_decay": dict(low_open=False), "l2": dict(low_open=False),
               "seed": dict(low_open=False, integer=True)}
    checked = {}
    if config.method in ADVERSARIAL:
        checked["epsilon"] = ball.check_epsilon(
            config.epsilon, config.attack_norm, 0.0, 1.0,
            math.prod(datasets.DATASETS[config.dataset].image_shape))
        numbers.update(ramp_epochs=dict(low_open=False, integer=True, hint="(0: no ramp)"),
                       replays=whole, trades_beta={})
        if config.method in ATTACK_STEPS:
            checked["attack_steps"] = validation.check_number(
                "attack_steps", ATTACK_STEPS[config.method] if config.attack_steps is None
                else config.attack_steps, **whole)
    checked.update({field: validation.check_number(field, getattr(config, field), **rules)
                    for field, rules in numbers.items()})
    if config.l2 and (config.optimizer != "sgd" or config.weight_decay):
        raise ValueError(f"l2={config.l2!r} is SGD's L2 weight decay (PyTorch's kind, with "
                         f"optimizer='sgd' and no weight_decay); optimizer is "
                         f"{config.optimizer!r}, weight_decay {config.weight_decay!r}.")
    if config.jit_compile and not backend.current().COMPILES_STEPS:
        raise ValueError(f"jit_compile=True is not offered on the {keras.backend.backend()} "
                         "backend: its steps run eagerly (torch.compile does not mix with "
                         "the double backward some methods take).")
    if not config.decay_biases and not config.l2:
        raise ValueError("decay_biases=False leaves the biases out of l2's decay, but l2 is "
                         f"{config.l2!r}: give l2 > 0 (with optimizer='sgd').")
    checked["regularizer_weight"] = _check_regularizer(config)
    checked["penalty_weight"] = models.check_penalty_weight(config.penalty_weight)
    checked["penalty_every"] = models.check_penalty_every(config.penalty_every)
    checked["clean_weight"] = models.check_clean_weight(config.clean_weight)
    checked["penalty_warmup"] = models.check_penalty_warmup(config.penalty_warmup)
    _, epsilon = penalty_lib.check_options(
        config.h, config.attack_norm, config.difference, "finite_difference",
        config.penalty_power, config.epsilon if config.penalty_power == 1 else None)
    if _radius_scaled(config):
        checked["epsilon"] = epsilon
    checked.update(check_processes(config))
    if config.train_limit is not None:
        checked["train_limit"] = validation.check_number(
            "train_limit", config.train_limit, low=checked["batch_size"], low_open=False,
            integer=True, hint="(at least batch_size)")
    return dataclasses.replace(config, **checked)


def _radius_scaled(config: TrainConfig) -> bool:
    """Whether the run trains with the unsquared penalty, which the radius scales."""
    return config.method in PENALISED and config.penalty_power == 1


def _check_regularizer(config: TrainConfig) -> float:
    """The regulariser's weight as a float; ValueError unless the regulariser fits the method."""
    if config.regularizer != "none" and config.method not in REGULARIZED:
        raise ValueError(f"regularizer={config.regularizer!r} regularises adversarial training "
                         f"(method {', '.join(REGULARIZED)}); method is {config.method!r}.")
    return regularizers.check(config.regularizer, config.regularizer_weight)


def check_processes(config: TrainConfig) -> dict:
    """The backend each setting needs, and the process layout; ValueError naming the first bad one."""
    backend = keras.backend.backend()
    needs = {"data_parallel": "jax", "mirrored": "tensorflow"}.get(config.strategy)
    if needs and backend != needs:
        raise ValueError(f"strategy={config.strategy!r} runs on the {needs} backend; Keras runs "
                         f"on {backend!r}. Set KERAS_BACKEND={needs} before starting.")
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


def _unused(config: TrainConfig) -> set:
    """The fields a run of this config does not depend on: where files go, the devices
    it trains on (every strategy gives one device's weights, tested), and the settings of
    other methods."""
    unused = {"model_dir", "overwrite", "download", "data_dir", "coordinator_address",
              "num_processes", "process_id", "coordinator_timeout", "strategy"}
    if config.method not in ADVERSARIAL:
        unused.add("ramp_epochs")
        if not _radius_scaled(config):
            unused.add("epsilon")
    if config.method not in ATTACK_STEPS:
        unused.add("attack_steps")
    if config.method != "free_at":
        unused.add("replays")
    if config.method != "trades":
        unused.add("trades_beta")
    if config.method not in REGULARIZED:
        unused |= {"regularizer", "regularizer_weight"}
    if config.method == "plain":
        unused.add("attack_norm")
    if config.method not in PENALISED:
        unused |= {"penalty_weight", "h", "difference", "penalty_every", "penalty_power",
                   "clean_weight", "penalty_warmup"}
    if config.regularizer == "gradient_penalty":
        unused.discard("h")
    if not config.l2:
        unused.add("decay_biases")
    return unused


def settings(config: TrainConfig) -> dict:
    """The settings a trained model depends on (a run's settings.json): every field but
    those of `_unused`."""
    stored = {k: v for k, v in dataclasses.asdict(config).items() if k not in _unused(config)}
    if "attack_steps" in stored and stored["attack_steps"] is None:  # not validated yet
        stored["attack_steps"] = ATTACK_STEPS[config.method]
    return stored


def upgrade_settings(stored: dict) -> dict:
    """A run's settings.json of any version as `settings` would write it today: the names
    and values renamed since it was written (deprecation.RENAMED, RENAMED_VALUES)
    replaced, and the fields added since at their defaults, which are the behaviour of
    the versions before them."""
    stored = dict(stored)
    stored.pop("strategy", None)  # stored before 0.7: a run may resume on other devices
    if stored.get("method") not in ADVERSARIAL + ("fgsm_at",):
        stored.pop("at_norm", None)  # unused before 0.7; its new name is the penalty's
    stored = deprecation.upgrade_config("settings.json", stored)
    stored["method"] = deprecation.renamed_value("method", stored.get("method"), warns=False)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(stored) - fields
    if unknown:
        raise ValueError(f"settings {sorted(unknown)} are not settings of this version's runs "
                         "(a newer keras_gradreg wrote them?).")
    return settings(TrainConfig(**dict(stored, model_dir="")))
