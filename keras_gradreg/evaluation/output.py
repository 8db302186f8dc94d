"""Result files: written whole, replaced as one set, never overwritten unasked."""

import csv
import json
import os
from typing import Callable, Mapping, Sequence

from keras_gradreg import files
from keras_gradreg.evaluation.reports import AutoAttackReport
from keras_gradreg.evaluation.reports import RobustnessReport


RESULT_FILES = {"json": "results.json", "csv": "results.csv", "plot": "error_vs_distance.png"}
"""The minimum-distance protocol's result files (write_results), by kind."""
AUTOATTACK_FILE = "autoattack.json"
"""The AutoAttack protocol's result file."""


def existing_results(output_dir: str, protocol: str = "minimum_distance") -> list:
    """The result files of a protocol already in output_dir (check before a long evaluation)."""
    names = RESULT_FILES.values() if protocol == "minimum_distance" else [AUTOATTACK_FILE]
    return files.existing(output_dir, names)


def write_set(output_dir: str, writers: Mapping[str, Callable[[str], None]],
              overwrite: bool = False) -> dict:
    """Writes a set of result files into output_dir, replaced as one set
    (files.replaced_together: a kill at any moment leaves the old set or the new one).

    Refuses, before writing anything, to replace any of them unless `overwrite`.

    Args:
      output_dir: the folder.
      writers: file name -> a function that writes that file at the path it is given.
      overwrite: replace files of these names already there.

    Returns:
      The paths written, by file name.
    """
    paths = {name: os.path.join(output_dir, name) for name in writers}
    files.refuse_to_replace(files.existing(output_dir, paths), overwrite)
    os.makedirs(output_dir, exist_ok=True)
    with files.replaced_together(list(paths.values())) as temporaries:
        for write, temporary in zip(writers.values(), temporaries):
            write(temporary)
    return paths


def json_writer(content) -> Callable[[str], None]:
    """A writer of `content` as indented JSON (for write_set)."""
    def write(path):
        with open(path, "w") as f:
            json.dump(content, f, indent=1)

    return write


def csv_writer(header: Sequence[str], rows: Sequence[Sequence]) -> Callable[[str], None]:
    """A writer of a CSV table (for write_set)."""
    def write(path):
        with open(path, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)

    return write


def write_autoattack_results(reports: Sequence[AutoAttackReport], output_dir: str,
                             overwrite: bool = False) -> str:
    """Writes autoattack.json into output_dir, whole or not at all; refuses to replace
    an existing one unless `overwrite`. Returns its path."""
    return write_set(output_dir, {AUTOATTACK_FILE: json_writer([r.to_dict() for r in reports])},
                     overwrite)[AUTOATTACK_FILE]


def write_results(reports: Sequence[RobustnessReport], output_dir: str,
                  overwrite: bool = False) -> dict:
    """Writes results.json, results.csv and error_vs_distance.png into output_dir, as one
    set (see `write_set`); refuses to replace existing ones unless `overwrite`.

    Returns:
      The paths written, by kind ("json", "csv", "plot").
    """
    from keras_gradreg import plotting  # matplotlib is imported only when plotting

    epsilons = reports[0].epsilons
    header = (["model", "attack_norm", "clean_error"] + [f"error_at_{e:g}" for e in epsilons]
              + ["mean_distance", "median_distance", "training_time_s"])
    rows = [[r.name, r.attack_norm, r.clean_error] + [r.error_at(e) for e in epsilons]
            + [r.mean_distance, r.median_distance, r.training_time] for r in reports]
    paths = write_set(output_dir, {
        RESULT_FILES["json"]: json_writer([r.to_dict() for r in reports]),
        RESULT_FILES["csv"]: csv_writer(header, rows),
        RESULT_FILES["plot"]: lambda path: plotting.plot_error_curves(reports, path),
    }, overwrite)
    return {kind: paths[name] for kind, name in RESULT_FILES.items()}
