"""Every renamed argument and saved setting, in one table, handled one way.

A call with an old name warns (DeprecationWarning) and goes on with the new one, unless
the name's meaning changed too: then the call fails, naming the new argument and the
value meant, while files saved under the old name (a `.keras` model, a metric's config,
a run's settings.json) still load, converted.
"""

import dataclasses
import warnings
from typing import Any, Callable, Optional

from keras_gradreg import penalty as penalty_lib


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


_NORM_NOTE = ("it now names the attack to defend against (the penalised gradient norm is "
              "its dual). For instance the paper's squared l1 penalty, against l_inf "
              "attacks, is attack_norm='linf'")

RENAMED = (
    Renamed("GradRegModel", "norm", "attack_norm", "0.2", penalty_lib.attack_norm_of_dual,
            refused=True, note=_NORM_NOTE),
    Renamed("settings.json", "norm", "attack_norm", "0.2", penalty_lib.attack_norm_of_dual),
    Renamed("LipschitzBound", "norm", "attack_norm", "0.2"),
    Renamed("CurvatureBound", "norm", "attack_norm", "0.2"),
    Renamed("evaluate_autoattack", "epsilon", "epsilons", "0.5",
            note="`epsilons` (a number or several) always returns a list of reports, one "
                 "per radius; `epsilon` returns a report for a number and a list otherwise, "
                 "and goes in 0.6"),
    Renamed("keras_gradreg", "models", "architectures", "0.5",
            note="beside model.py's GradRegModel the name misled"),
)
"""The table: every rename the library still understands."""


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


def warn(entry: Renamed, stacklevel: int = 1) -> None:
    """The DeprecationWarning for a use of `entry.old`, attributed to the frame
    `stacklevel` above warn's caller (1: the caller itself)."""
    warnings.warn(f"{entry.where}: `{entry.old}` is renamed `{entry.new}` (since {entry.since})"
                  + (f"; {entry.note}" if entry.note else "") + ".",
                  DeprecationWarning, stacklevel=stacklevel + 1)


def renamed_attribute(where: str, name: str) -> Optional[str]:
    """The new name of `where`'s old attribute `name`, after a DeprecationWarning; None if
    `name` was never renamed."""
    for entry in _entries(where):
        if entry.old == name:
            warn(entry, stacklevel=3)
            return entry.new
    return None
