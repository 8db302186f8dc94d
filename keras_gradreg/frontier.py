"""Robustness per unit of training cost: which method gives the most at a budget.

`run_frontier` trains every run of a grid (the penalty over lambda and penalty_every;
plain training; fast, free and PGD adversarial training) on the same setting, evaluates
each with AutoAttack's standard cascade at one radius on the same test images, and
returns one `Point` per configuration: training time (wall time of `fit`'s epochs, see
training.py), clean and robust error, averaged over the seeds with their spread, and
whether it is Pareto-optimal (no other configuration is both as fast and as robust, and
better in one). Runs and evaluations already done with the same settings are reused,
so a killed frontier resumes; results are never replaced without `overwrite`.
"""

import csv
import dataclasses
import io
import json
import math
import numbers
import os
import time
from typing import Mapping, Optional, Sequence

import numpy as np

from keras_gradreg import autoattack
from keras_gradreg import evaluation
from keras_gradreg import files
from keras_gradreg import training
from keras_gradreg import validation

SMALL_GRID = {"penalty_weight": (10.0, 30.0), "penalty_every": (1, 4), "pgd_steps": (3, 7)}
"""The default grid: 24 minutes for two seeds on 2 CPU cores with 500 images (measured)."""
FULL_GRID = {"penalty_weight": (1.0, 3.0, 10.0, 30.0), "penalty_every": (1, 2, 4),
             "pgd_steps": (3, 7)}
RESULT_FILES = {"json": "frontier.json", "csv": "frontier.csv", "plot": "frontier.png"}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One configuration of the grid: a name and its TrainConfig settings."""

    name: str
    settings: dict


def check_sizes(sizes: Mapping[str, Sequence]) -> dict:
    """The grid's sizes as tuples of Python numbers; a ValueError naming a bad one.

    Args:
      sizes: lists for "penalty_weight" (lambda > 0), "penalty_every" (k >= 1) and
        "pgd_steps" (>= 1), the keys of SMALL_GRID.
    """
    rules = {"penalty_weight": dict(), "penalty_every": dict(low=1, low_open=False, integer=True),
             "pgd_steps": dict(low=1, low_open=False, integer=True)}
    if not isinstance(sizes, Mapping) or set(sizes) != set(rules):
        keys = sorted(sizes) if isinstance(sizes, Mapping) else sizes
        raise ValueError(f"grid sizes {keys!r} must name exactly {sorted(rules)}.")
    checked = {}
    for key, rule in rules.items():
        values = sizes[key]
        if isinstance(values, (str, numbers.Number)) or not len(values):
            raise ValueError(f"grid {key}={values!r} must be a non-empty list of numbers.")
        checked[key] = tuple(validation.check_number(f"grid {key}", v, **rule) for v in values)
        if len(set(checked[key])) < len(values):
            raise ValueError(f"grid {key}={list(values)!r} repeats a value; each runs once.")
    return checked


def grid(base: training.TrainConfig, sizes: Optional[Mapping[str, Sequence]] = None) -> list:
    """The configurations, each with its best-known settings on `base`'s budget.

    Adversarial training uses `base.at_epsilon`, ramped over `base.at_ramp_epochs`; free
    training runs ceil(epochs / m) epochs (m replays each, about as many updates as the
    others) and ramps over ceil(at_ramp_epochs / m).

    Args:
      base: the setting shared by all runs.
      sizes: the penalty's lambdas and k's and PGD-AT's steps (see `check_sizes`);
        None: SMALL_GRID.

    Returns:
      One Entry per configuration: plain, the penalty per (lambda, k), fgsm_at, free_at
      and pgd_at per step count.
    """
    sizes = check_sizes(SMALL_GRID if sizes is None else sizes)
    entries = [Entry("plain", dict(method="plain"))]
    entries += [Entry(f"gradreg lambda={lam:g} k={k}",
                      dict(method="gradreg", penalty_weight=lam, penalty_every=k))
                for lam in sizes["penalty_weight"] for k in sizes["penalty_every"]]
    entries.append(Entry("fgsm_at", dict(method="fgsm_at")))
    m = base.free_replays
    entries.append(Entry(f"free_at m={m}", dict(
        method="free_at", epochs=math.ceil(base.epochs / m),
        at_ramp_epochs=math.ceil(base.at_ramp_epochs / m))))
    entries += [Entry(f"pgd_at {steps} steps", dict(method="pgd_at", at_steps=steps))
                for steps in sizes["pgd_steps"]]
    return entries


def _progress_text(elapsed: float, done: int, total: int) -> str:
    """"elapsed M:SS, about M:SS left" (the mean time of the runs done so far, times the
    runs left: runs reused from an earlier frontier make it an underestimate at first)."""
    clock = lambda s: f"{int(s) // 60}:{int(s) % 60:02d}"  # noqa: E731
    left = f", about {clock(elapsed / done * (total - done))} left" if done else ""
    return f"elapsed {clock(elapsed)}{left}"


@dataclasses.dataclass
class Point:
    """One configuration's result over its seeds (means; spreads are max - min)."""

    name: str
    method: str
    seeds: tuple
    train_seconds: float
    epoch_seconds: float
    clean_error: float
    robust_error: float
    robust_spread: float
    clean_spread: float
    seconds_spread: float
    pareto: bool = False
    catastrophic_overfitting: int = 0  # seeds whose RobustnessMonitor flagged it


def pareto_optimal(times: Sequence[float], errors: Sequence[float]) -> np.ndarray:
    """Per point, whether no other point is at least as fast and as robust, and strictly
    better in one of the two."""
    times, errors = np.asarray(times, float), np.asarray(errors, float)
    dominated = [(np.any((times <= t) & (errors <= e) & ((times < t) | (errors < e))))
                 for t, e in zip(times, errors)]
    return ~np.array(dominated, bool)


def _collapsed(model_dir: str) -> bool:
    """Whether the run's history records catastrophic overfitting (adversarial training)."""
    path = os.path.join(model_dir, training.HISTORY_FILE)
    if not os.path.exists(path):
        return False
    with open(path, newline="") as f:
        return any(float(row.get("catastrophic_overfitting") or 0) > 0 for row in csv.DictReader(f))


def _evaluation(config: training.TrainConfig, path: str, x, y, epsilon: float,
                budget: autoattack.AutoAttackBudget, verbose: int) -> dict:
    """The run's AutoAttack result at epsilon, from `path` if it was computed with the
    same settings (images, budget), else computed and written whole."""
    wanted = {"epsilon": epsilon, "num_images": len(x), "budget": dataclasses.asdict(budget),
              "settings": training.settings(config)}
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        if {k: stored.get(k) for k in wanted} == wanted:
            return stored
    model, seconds = training.finished_run(config)
    report = evaluation.evaluate_autoattack(model, x, y, epsilon=epsilon, num_images=len(x),
                                            budget=budget, verbose=verbose,
                                            name=os.path.basename(config.model_dir))
    epochs = config.epochs
    result = dict(wanted, train_seconds=seconds, epoch_seconds=seconds / epochs,
                  clean_error=report.clean_error, robust_error=report.robust_error,
                  attack_seconds=report.seconds,
                  catastrophic_overfitting=_collapsed(config.model_dir))
    files.write_text(path, json.dumps(result, indent=1))
    return result


def plan(base: training.TrainConfig, output_dir: str, *, epsilon: float,
         seeds: Sequence[int] = (0, 1), sizes: Optional[Mapping[str, Sequence]] = None) -> tuple:
    """The runs of a frontier, every setting checked before any work (a ValueError names
    the first bad one). Arguments as for `run_frontier`.

    Returns:
      (the grid's entries, {(name, seed): the run's TrainConfig}).
    """
    entries = grid(base, sizes)
    if not len(seeds) or len(set(seeds)) < len(seeds):
        raise ValueError(f"seeds={list(seeds)!r} must be one or more different seeds.")
    configs = {(entry.name, seed): training.validate(dataclasses.replace(
        base, model_dir=os.path.join(output_dir, "runs", _slug(entry.name, seed)), seed=seed,
        overwrite=False, **entry.settings)) for entry in entries for seed in seeds}
    evaluation.check_radii([epsilon], "linf")
    return entries, configs


def run_frontier(base: training.TrainConfig, output_dir: str, *, epsilon: float,
                 num_images: int = 500, seeds: Sequence[int] = (0, 1),
                 sizes: Optional[Mapping[str, Sequence]] = None,
                 budget: autoattack.AutoAttackBudget = autoattack.STANDARD_BUDGET,
                 verbose: int = 1) -> list:
    """Trains and evaluates every configuration of the grid, each seed in its own run.

    Args:
      base: the setting shared by all runs (dataset, model, epochs, optimizer, ...;
        `model_dir` and `method` are set per run).
      output_dir: runs go to OUTPUT_DIR/runs/NAME-sSEED, evaluations to
        OUTPUT_DIR/evaluations/NAME-sSEED.json.
      epsilon: the l_inf radius of the robust error.
      num_images: test images, the same for every run.
      seeds: one run per seed and configuration.
      sizes: the grid (see `grid`); None: SMALL_GRID, FULL_GRID is the whole one.
      budget: AutoAttack's budgets (its standard ones by default).
      verbose: 1 prints progress.

    Returns:
      One Point per configuration, Pareto-optimal ones marked.
    """
    entries, configs = plan(base, output_dir, epsilon=epsilon, seeds=seeds, sizes=sizes)
    x, y = training.test_images(base.dataset, num_images, data_dir=base.data_dir,
                                download=base.download)
    os.makedirs(os.path.join(output_dir, "evaluations"), exist_ok=True)
    results, start = {}, time.monotonic()
    for i, ((name, seed), config) in enumerate(configs.items()):
        if verbose:
            print(f"run {i + 1} of {len(configs)}: {name}, seed {seed}; "
                  f"{_progress_text(time.monotonic() - start, i, len(configs))}", flush=True)
        if not training.is_finished(config):
            training.train(config, verbose=0)
        path = os.path.join(output_dir, "evaluations", _slug(name, seed) + ".json")
        results[name, seed] = _evaluation(config, path, x, y, epsilon, budget, verbose=verbose)
    points = []
    for entry in entries:
        rows = [results[entry.name, seed] for seed in seeds]
        column = lambda key: np.array([r[key] for r in rows], float)  # noqa: E731
        points.append(Point(
            name=entry.name, method=entry.settings["method"], seeds=tuple(seeds),
            train_seconds=float(column("train_seconds").mean()),
            epoch_seconds=float(column("epoch_seconds").mean()),
            clean_error=float(column("clean_error").mean()),
            robust_error=float(column("robust_error").mean()),
            robust_spread=float(np.ptp(column("robust_error"))),
            clean_spread=float(np.ptp(column("clean_error"))),
            seconds_spread=float(np.ptp(column("train_seconds"))),
            catastrophic_overfitting=int(sum(r["catastrophic_overfitting"] for r in rows))))
    optimal = pareto_optimal([p.train_seconds for p in points], [p.robust_error for p in points])
    for point, best in zip(points, optimal):
        point.pareto = bool(best)
    return points


def _slug(name: str, seed: int) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_") + f"-s{seed}"


def format_frontier(points: Sequence[Point], epsilon: float, num_images: int) -> str:
    """The table behind the plot, fastest first; * marks the Pareto-optimal runs."""
    header = ["", "run", "train s", "s / epoch", "% clean error", f"% robust error at {epsilon:g}",
              "spread (pts)", "collapsed"]
    rows = [["*" if p.pareto else "", p.name, f"{p.train_seconds:.1f}", f"{p.epoch_seconds:.2f}",
             f"{100 * p.clean_error:.1f}", f"{100 * p.robust_error:.1f}",
             f"{100 * p.robust_spread:.1f}",
             f"{p.catastrophic_overfitting}/{len(p.seeds)}" if p.method.endswith("_at") else "-"]
            for p in sorted(points, key=lambda p: p.train_seconds)]
    return evaluation.render_table(
        f"AutoAttack (standard) robust error at l_inf {epsilon:g}, {num_images} test images, "
        f"mean of seeds {', '.join(map(str, points[0].seeds))} (spread: max - min)", header, rows)


def existing_results(output_dir: str) -> list:
    return [os.path.join(output_dir, n) for n in RESULT_FILES.values()
            if os.path.exists(os.path.join(output_dir, n))]


def write_frontier(points: Sequence[Point], output_dir: str, epsilon: float,
                   overwrite: bool = False) -> dict:
    """frontier.json, frontier.csv and frontier.png, written whole and together; refuses
    to replace existing ones unless `overwrite`. Returns the paths."""
    from keras_gradreg import plotting

    existing = existing_results(output_dir)
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist(s); pass overwrite=True "
                              "(--overwrite) to replace them, or choose another output directory.")
    paths = {kind: os.path.join(output_dir, name) for kind, name in RESULT_FILES.items()}
    rows = [dataclasses.asdict(p) for p in points]
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with files.replaced_atomically(paths["json"]) as json_path, \
            files.replaced_atomically(paths["csv"]) as csv_path, \
            files.replaced_atomically(paths["plot"]) as plot_path:
        with open(json_path, "w") as f:
            json.dump({"epsilon": epsilon, "points": rows}, f, indent=1)
        with open(csv_path, "w") as f:
            f.write(table.getvalue())
        plotting.plot_frontier(points, epsilon, plot_path)
    return paths
