"""Every renamed argument and saved setting, in one table, handled one way.

A call with an old name warns (DeprecationWarning) and goes on with the new one, unless
the name's meaning changed too: then the call fails, naming the new argument and the
value meant, while files saved under the old name (a `.keras` model, a metric's config,
a run's settings.json) still load, converted.
"""

import dataclasses
import importlib
import warnings
from typing import Any, Callable, Optional

from keras_gradreg import per_example
from keras_gradreg import validation


@dataclasses.dataclass(frozen=True)
class Renamed:
    """One renamed argument.

    Attributes:
      where: what takes it (a class, a function, or "settings.json").
      old: the old name.
      new: the new name.
      since: the version that renamed it.
      convert: old value -> new value in saved files (None: the same value).
      refused: the meaning changed, so a call with the old name fails rather than warns.
      note: why, for the message.
    """

    where: str
    old: str
    new: str
    since: str
    convert: Optional[Callable[[Any], Any]] = None
    refused: bool = False
    note: str = ""


def _attack_norm_of_dual(dual: str) -> str:
    """The attack norm whose dual is `dual` (the old `norm` argument's meaning)."""
    validation.check_choice("norm", dual, tuple(per_example.DUAL_NORMS.values()))
    return next(attack for attack, d in per_example.DUAL_NORMS.items() if d == dual)


_NORM_NOTE = ("it now names the attack to defend against (the penalised gradient norm is "
              "its dual). For instance the paper's squared l1 penalty, against l_inf "
              "attacks, is attack_norm='linf'")

_TRAINING_FIELDS = (  # TrainConfig, settings.json and the scripts' flags: one word per meaning
    ("at_epsilon", "epsilon"), ("at_norm", "attack_norm"), ("at_ramp_epochs", "ramp_epochs"),
    ("at_regularizer", "regularizer"), ("at_regularizer_weight", "regularizer_weight"),
    ("at_steps", "attack_steps"), ("free_replays", "replays"))
_ONE_NORM = ("adversarial training's ball and the penalty's dual norm now share one "
             "attack_norm, the norm of the attack trained against")

RENAMED = (
    Renamed("GradRegModel", "norm", "attack_norm", "0.2", _attack_norm_of_dual,
            refused=True, note=_NORM_NOTE),
    Renamed("settings.json", "norm", "attack_norm", "0.2", _attack_norm_of_dual),
    Renamed("LipschitzBound", "norm", "attack_norm", "0.2"),
    Renamed("CurvatureBound", "norm", "attack_norm", "0.2"),
    Renamed("GradRegModel", "method", "estimator", "0.7",
            note="`method` names a training recipe; the penalty's is its estimator"),
    Renamed("input_gradient_penalty", "method", "estimator", "0.7"),
    Renamed("SingleStepAdversarialModel", "method", "attack", "0.7"),
    Renamed("AttackBudget", "step_fraction", "reach", "0.7",
            note="steps reach `reach` radii in all, as PGD's everywhere"),
    *(Renamed("settings.json", old, new, "0.7", note=_ONE_NORM if old == "at_norm" else "")
      for old, new in _TRAINING_FIELDS),
    Renamed("run_frontier", "radii", "epsilons", "0.7"),
    Renamed("RobustnessReport.error_at", "eps", "epsilon", "0.8", note="one word: epsilon"),
    Renamed("evaluate_robustness", "settings", "budget", "0.8",
            note="the attacks' budgets are AttackBudget's; 'settings' are a run's"),
    Renamed("keras_gradreg", "AttackSettings", "attacks.AttackBudget", "0.8",
            note="the attacks' budgets; 'settings' are a run's"),
    Renamed("keras_gradreg.attacks", "AttackSpec", "Attack", "0.8",
            note="an attack's spec is declared in its file (attacks.base.Attack)"),
    Renamed("keras_gradreg.attacks", "AttackSettings", "AttackBudget", "0.8",
            note="the attacks' budgets; 'settings' are a run's"),
    Renamed("frontier.json", "radii", "epsilons", "0.7"),
    Renamed("keras_gradreg", "METHODS", "ESTIMATORS", "0.7"),
    Renamed("keras_gradreg", "BOUND_NORMS", "attacks.ball.NORMS", "0.7"),
    Renamed("keras_gradreg", "primitives", "attacks.ball", "0.7"),
    Renamed("keras_gradreg", "autoattack", "attacks", "0.7",
            note="one module per attack: attacks.apgd, attacks.fab, attacks.square, and "
                 "attacks.registry for their names"),
    Renamed("keras_gradreg", "adversarial_training", "models", "0.7"),
    Renamed("keras_gradreg", "local_linearity", "regularizers.local_linearity", "0.7"),
    *(Renamed("keras_gradreg.penalty", old, new, "0.8",
              note="the per-example vocabulary moved to keras_gradreg.per_example")
      for old, new in (("as_float", "per_example.as_float"),
                       ("at_least_float32", "per_example.at_least_float32"),
                       ("require_targets", "per_example.require_targets"),
                       ("per_example_loss_fn", "per_example.loss_fn"),
                       ("flatten_per_example", "per_example.flatten"),
                       ("unflatten_like", "per_example.unflatten"),
                       ("CleanPass", "per_example.CleanPass"), ("LossFn", "per_example.LossFn"),
                       ("missing_gradient_error", "per_example.missing_gradient_error"),
                       ("ATTACK_NORMS", "per_example.ATTACK_NORMS"),
                       ("DUAL_NORMS", "per_example.DUAL_NORMS"),
                       ("DEFAULT_ATTACK_NORM", "per_example.DEFAULT_ATTACK_NORM"),
                       ("dual_norm", "per_example.dual_norm"),
                       ("clean_pass", "backend.clean_pass"),
                       ("validate_options", "penalty.check_options"))),
    Renamed("keras_gradreg.training", "validate", "training.check_config", "0.8",
            note="checks are check_*"),
    *(Renamed("keras_gradreg.models", old, "models." + old.replace("validate", "check"), "0.8",
              note="checks are check_*")
      for old in ("validate_penalty_weight", "validate_penalty_every")),
    *(Renamed("keras_gradreg.attacks.ball", old, new, "0.8", note=note)
      for old, new, note in (("norm", "per_example.norm", "norms are per_example's"),
                             ("per_example", "per_example.broadcast", "per_example's now"),
                             ("max_radius", "attacks.ball.max_epsilon", "one word: epsilon"),
                             ("within_radius", "attacks.ball.within_epsilon",
                              "one word: epsilon"))),
)
"""The table: every rename the library still understands."""

RENAMED_VALUES = {("method", "fgsm_at"): ("fgsm_rs", "0.7")}
"""Renamed values, by (setting, old value): (new value, since). FGSM from a random start is
"fgsm_rs" everywhere (Wong et al.'s name), the training method and the attack alike."""


def renamed_value(setting: str, value: Any, warns: bool = True) -> Any:
    """The new value of a setting's renamed value (with a DeprecationWarning if `warns`;
    saved files convert silently), else the value itself."""
    if not isinstance(value, str) or (setting, value) not in RENAMED_VALUES:
        return value
    new, since = RENAMED_VALUES[setting, value]
    if warns:
        warnings.warn(f"{setting}={value!r} is {setting}={new!r} (renamed in {since}).",
                      DeprecationWarning, stacklevel=3)
    return new


def _entries(where: str) -> list:
    return [r for r in RENAMED if r.where == where]


def upgrade_config(where: str, config: dict) -> dict:
    """A saved config or settings dict with every old name of `where` replaced by the
    new one, its value converted (the dict given is not changed)."""
    config = dict(config)
    for entry in _entries(where):
        if entry.old in config:
            value = config.pop(entry.old)
            config[entry.new] = entry.convert(value) if entry.convert else value
    return config


def renamed_arguments(where: str, kwargs: dict) -> dict:
    """The keyword arguments of a call to `where` with the old names replaced by the new
    ones (each with a DeprecationWarning), or a TypeError for a name whose meaning changed.

    Raises:
      TypeError: an old name given together with its new one, or a refused old name.
    """
    kwargs = dict(kwargs)
    for entry in _entries(where):
        if entry.old not in kwargs:
            continue
        value = kwargs.pop(entry.old)
        if entry.refused:
            meant = ""
            try:
                meant = f": {entry.old}={value!r} is now {entry.new}={entry.convert(value)!r}"
            except (TypeError, ValueError):
                pass
            raise TypeError(f"`{entry.old}` was renamed `{entry.new}` in {entry.since}{meant}; "
                            f"{entry.note}.")
        if entry.new in kwargs:
            raise TypeError(f"{where} got both `{entry.old}` (renamed in {entry.since}) and "
                            f"`{entry.new}`; pass `{entry.new}` only.")
        warn(entry, stacklevel=3)  # the caller of `where`
        kwargs[entry.new] = value
    return kwargs


def renamed_keyword(where: str, renamed: dict, new: str, value: Any, default: Any = None) -> Any:
    """The value of keyword `new` in a call to `where` whose `**renamed` caught the others:
    `value` as given, or the one passed under its old name (with a DeprecationWarning).

    Raises:
      TypeError: another unexpected keyword, or both the old and the new name.
    """
    renamed = renamed_arguments(where, renamed)
    unexpected = set(renamed) - {new}
    if unexpected:
        raise TypeError(f"{where} got unexpected keyword argument(s) {sorted(unexpected)}.")
    if new not in renamed:
        return value
    if value is not default and value != default:
        raise TypeError(f"{where} got `{new}` under its old name and its new one; pass "
                        f"`{new}` only.")
    return renamed[new]


def warn(entry: Renamed, stacklevel: int = 1) -> None:
    """The DeprecationWarning for a use of `entry.old`, attributed to the frame
    `stacklevel` above warn's caller (1: the caller itself)."""
    warnings.warn(f"{entry.where}: `{entry.old}` is renamed `{entry.new}` (since {entry.since})"
                  + (f"; {entry.note}" if entry.note else "") + ".",
                  DeprecationWarning, stacklevel=stacklevel + 1)


def module_getattr(where: str) -> Callable[[str], Any]:
    """A module's `__getattr__` (PEP 562) for its renamed attributes: `where.name` resolves,
    after a DeprecationWarning, to the new dotted path below keras_gradreg."""

    def __getattr__(name: str) -> Any:
        new = renamed_attribute(where, name)
        if new is None:
            raise AttributeError(f"module {where!r} has no attribute {name!r}")
        module, _, attribute = new.rpartition(".")
        return getattr(importlib.import_module(f"keras_gradreg.{module}"), attribute)

    return __getattr__


def renamed_attribute(where: str, name: str) -> Optional[str]:
    """The new name of `where`'s old attribute `name`, after a DeprecationWarning; None if
    `name` was never renamed."""
    for entry in _entries(where):
        if entry.old == name:
            warn(entry, stacklevel=3)
            return entry.new
    return None
