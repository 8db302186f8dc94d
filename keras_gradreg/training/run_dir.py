"""A run's directory: its files, whether it is finished, where an unfinished one
resumes, and the refusal to mix runs of other settings."""

import csv
import dataclasses
import glob
import io
import json
import os
import shutil
import warnings
import zipfile
from typing import Optional

import keras

from keras_gradreg import files
from keras_gradreg import layers
from keras_gradreg.training.config import TrainConfig
from keras_gradreg.training.config import settings
from keras_gradreg.training.config import upgrade_settings

MODEL_FILE, TIME_FILE, SETTINGS_FILE = "model.keras", "training_time.json", "settings.json"
HISTORY_FILE, BACKUP_DIR, STATE_FILE = "history.csv", "backup", "state.json"
"""A run's files in model_dir; BACKUP_DIR/STATE_FILE names the last completed epoch's
checkpoint, BACKUP_DIR/epoch-E.weights.h5."""


class RunFileError(ValueError):
    """A file of a run cannot be read; the message names it and the way out."""


def path_in(model_dir: str, *names: str) -> str:
    """A file of the run directory."""
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
    path = path_in(model_dir, TIME_FILE)
    if not os.path.exists(path):
        return None
    try:
        return float(_read_json(path)["seconds"])
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, RunFileError):
            raise
        raise RunFileError(f"{path} holds no training time ({error!r}); remove the run with "
                           "--overwrite to start afresh.") from error


def check_settings(config: TrainConfig) -> None:
    """Raises ValueError if config.model_dir holds a run (finished or not) of other settings.

    A model of unknown settings (no settings file beside it) counts as different.
    Settings files written before a setting was renamed are read with the new names
    (`upgrade_settings`).
    """
    path = path_in(config.model_dir, SETTINGS_FILE)
    if not os.path.exists(path):
        if os.path.exists(path_in(config.model_dir, MODEL_FILE)):
            raise ValueError(f"{config.model_dir} holds a model without {SETTINGS_FILE}, so its "
                             "settings are unknown; choose another model_dir or pass overwrite=True.")
        return
    stored = _read_json(path)
    stored = upgrade_settings(stored)
    wanted = settings(config)
    differ = [f"{k}={stored.get(k)!r} there, {wanted.get(k)!r} asked"
              for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k)]
    if differ:
        raise ValueError(f"{config.model_dir} holds a run with other settings ({'; '.join(differ)}); "
                         "choose another model_dir or pass overwrite=True (--overwrite) to start afresh.")


@dataclasses.dataclass
class Resume:
    """Where an unfinished run stands: its last completed epoch's checkpoint."""

    epochs: int
    seconds: float
    weights: Optional[str]  # None before the first completed epoch


def resume_point(model_dir: str) -> Resume:
    """The checkpoint of an unfinished run (epoch 0 if none), or RunFileError."""
    backup = path_in(model_dir, BACKUP_DIR)
    state_path = path_in(backup, STATE_FILE)
    if not os.path.exists(state_path):
        if glob.glob(path_in(backup, "*.h5")):
            raise RunFileError(f"{backup} holds weights but no {STATE_FILE} (a backup of an older "
                               "version, or a damaged one); start afresh with --overwrite.")
        return Resume(0, 0.0, None)
    state = _read_json(state_path)
    try:
        weights = path_in(backup, state["weights"])
        resume = Resume(int(state["epochs"]), float(state["seconds"]), weights)
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
    model = layers.load_model(path_in(config.model_dir, MODEL_FILE))
    return model, training_seconds(config.model_dir)


def is_finished(config: TrainConfig) -> bool:
    """Whether model_dir holds the finished run of `config`: finished_run's checks and
    errors, without loading the model."""
    model_path = path_in(config.model_dir, MODEL_FILE)
    if not os.path.exists(model_path):
        return False
    check_settings(config)
    if not _readable_model(model_path):
        if resume_point(config.model_dir).weights:
            return False
        raise RunFileError(f"{model_path} is not a readable .keras file (not a whole zip archive) "
                           "and there is no checkpoint to resume from; train it again with "
                           "overwrite=True (--overwrite).")
    training_seconds(config.model_dir)  # raises if its time file is unreadable
    return True


def trim_history(path: str, epochs: int) -> None:
    """Keeps the history rows of the first `epochs` epochs (a killed epoch may have left one)."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) < epochs]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(kept if epochs else [])
    files.write_text(path, out.getvalue())


def check_model_dir(config: TrainConfig) -> None:
    """`train`'s refusals, which a script can make before any work: unless
    config.overwrite, FileExistsError where model_dir holds the finished run of `config`,
    ValueError where it holds a run (finished or not) of other settings."""
    if config.overwrite:
        return
    if is_finished(config):
        raise FileExistsError(
            f"{path_in(config.model_dir, MODEL_FILE)} already exists (a finished run); pass "
            "overwrite=True (--overwrite) to train it again, or choose another model_dir."
        )
    check_settings(config)


def prepare(config: TrainConfig) -> Resume:
    """The chief's part of `train` before training: checks model_dir, records the
    settings, and finds where to resume."""
    model_path = path_in(config.model_dir, MODEL_FILE)
    if config.overwrite:  # asked to start afresh
        for stale in (MODEL_FILE, TIME_FILE, HISTORY_FILE, SETTINGS_FILE):
            if os.path.exists(path_in(config.model_dir, stale)):
                os.remove(path_in(config.model_dir, stale))
        shutil.rmtree(path_in(config.model_dir, BACKUP_DIR), ignore_errors=True)
    else:
        check_model_dir(config)
    resume = resume_point(config.model_dir)
    if os.path.exists(model_path):
        warnings.warn(f"{model_path} is unreadable (killed while it was written?); resuming "
                      f"from the checkpoint of epoch {resume.epochs}.", stacklevel=2)
    os.makedirs(config.model_dir, exist_ok=True)
    files.write_text(path_in(config.model_dir, SETTINGS_FILE), json.dumps(settings(config), indent=1))
    trim_history(path_in(config.model_dir, HISTORY_FILE), resume.epochs)
    return resume
