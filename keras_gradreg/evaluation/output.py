"""Result files: written whole, replaced as one set, never overwritten unasked."""

import csv
import json
import os
from typing import Sequence

from keras_gradreg import files
from keras_gradreg.evaluation.reports import AutoAttackReport
from keras_gradreg.evaluation.reports import RobustnessReport


RESULT_FILES = {"json": "results.json", "csv": "results.csv", "plot": "error_vs_distance.png"}
AUTOATTACK_FILE = "autoattack.json"


def existing_results(output_dir: str, protocol: str = "minimum_distance") -> list:
    """The result files of a protocol already in output_dir (check before a long evaluation)."""
    names = RESULT_FILES.values() if protocol == "minimum_distance" else [AUTOATTACK_FILE]
    return files.existing(output_dir, names)


def write_autoattack_results(reports: Sequence[AutoAttackReport], output_dir: str,
                             overwrite: bool = False) -> str:
    """Writes autoattack.json into output_dir, whole or not at all; refuses to replace
    an existing one unless `overwrite`. Returns its path."""
    path = os.path.join(output_dir, AUTOATTACK_FILE)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to "
                              "replace it, or choose another output directory.")
    os.makedirs(output_dir, exist_ok=True)
    files.write_text(path, json.dumps([r.to_dict() for r in reports], indent=1))
    return path


def write_results(reports: Sequence[RobustnessReport], output_dir: str,
                  overwrite: bool = False) -> dict:
    """Writes results.json, results.csv and error_vs_distance.png into output_dir.

    Refuses, before writing anything, to replace existing result files unless
    `overwrite` is set. The three are replaced as one set (files.replaced_together): a
    kill at any moment leaves the old three or the new three.

    Returns:
      The paths written, by kind.
    """
    from keras_gradreg import plotting  # matplotlib is imported only when plotting

    paths = {kind: os.path.join(output_dir, name) for kind, name in RESULT_FILES.items()}
    files.refuse_to_replace(existing_results(output_dir), overwrite)
    os.makedirs(output_dir, exist_ok=True)
    with files.replaced_together(list(paths.values())) as (json_path, csv_path, plot_path):
        with open(json_path, "w") as f:
            json.dump([r.to_dict() for r in reports], f, indent=1)
        with open(csv_path, "w", newline="") as f:
            writer = csv.writer(f)
            epsilons = reports[0].epsilons
            writer.writerow(["model", "attack_norm", "clean_error"]
                            + [f"error_at_{e:g}" for e in epsilons]
                            + ["mean_distance", "median_distance", "training_time_s"])
            for r in reports:
                writer.writerow([r.name, r.attack_norm, r.clean_error]
                                + [r.error_at(e) for e in epsilons]
                                + [r.mean_distance, r.median_distance, r.training_time])
        plotting.plot_error_curves(reports, plot_path)
    return paths
