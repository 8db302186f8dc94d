"""Robustness per unit of training cost: which method gives the most at a budget.

`run_frontier` trains every run of a grid (the penalty over lambda and penalty_every;
plain training; single-step, free and PGD adversarial training) on the same setting,
evaluates each with AutoAttack's standard cascade at one or more radii on the same test
images, and returns one `Point` per configuration: training time (wall time of `fit`'s
epochs, see keras_gradreg.training), clean and robust error, averaged over the seeds with their
spread, how many seeds failed, and whether it is Pareto-optimal (no other configuration
is both as fast and as robust, and better in one). Runs and evaluations already done
with the same settings are reused, so a killed frontier resumes; results are never
replaced without `overwrite`.

The regimes the documentation compares methods in are examples/regimes.py's, which
examples/frontier.py runs.
"""

import csv
import dataclasses
import json
import logging
import math
import numbers
import os
import time
from typing import Mapping, Optional, Sequence

import numpy as np

from keras_gradreg import datasets
from keras_gradreg import deprecation
from keras_gradreg import evaluation
from keras_gradreg import files
from keras_gradreg import training
from keras_gradreg import validation
from keras_gradreg.attacks import ball
from keras_gradreg.attacks.budgets import STANDARD_BUDGET
from keras_gradreg.attacks.budgets import AutoAttackBudget

SMALL_GRID = {"penalty_weight": (10.0, 30.0), "penalty_every": (1, 4), "pgd_steps": (3, 7)}
"""The default grid of the penalty's lambdas and k's and PGD-AT's steps."""
FULL_GRID = {"penalty_weight": (1.0, 3.0, 10.0, 30.0), "penalty_every": (1, 2, 4),
             "pgd_steps": (3, 7)}
"""The grid of `--full_grid`: every lambda and k of the penalty, PGD-AT's step counts."""
RESULT_FILES = {"json": "frontier.json", "csv": "frontier.csv", "plot": "frontier.png"}
"""The files write_frontier writes, by kind."""
NEVER_LEARNED = 0.5
"""A seed whose clean error on the evaluation images is above this never learned the task
(the other failure of single-step training at large radii, beside a collapse)."""


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


FAST_AND_FREE = (Entry("fgsm_rs", dict(method="fgsm_rs")), Entry("free_at", dict(method="free_at")))
"""The cheap adversarial training of the first frontier: FGSM-RS and free training."""


def grid(base: training.TrainConfig, sizes: Optional[Mapping[str, Sequence]] = None,
         cheap: Sequence[Entry] = FAST_AND_FREE) -> list:
    """The configurations, each with its best-known settings on `base`'s budget.

    Adversarial training uses `base.epsilon` and `base.attack_norm`, ramped over
    `base.ramp_epochs`; free training runs ceil(epochs / m) epochs (m replays each,
    about as many updates as the others) and ramps over ceil(ramp_epochs / m).

    Args:
      base: the setting shared by all runs.
      sizes: the penalty's lambdas and k's and PGD-AT's steps (see `check_sizes`);
        None: SMALL_GRID.
      cheap: the single-step (and free) entries, run between the penalty and PGD-AT;
        a "free_at" entry gets its epochs from `base` (and "m=M" in its name).

    Returns:
      One Entry per configuration: plain, the penalty per (lambda, k), the cheap ones,
      and pgd_at per step count.
    """
    sizes = check_sizes(SMALL_GRID if sizes is None else sizes)
    entries = [Entry("plain", dict(method="plain"))]
    entries += [Entry(f"gradreg lambda={lam:g} k={k}",
                      dict(method="gradreg", penalty_weight=lam, penalty_every=k))
                for lam in sizes["penalty_weight"] for k in sizes["penalty_every"]]
    m = base.replays
    for entry in cheap:
        if entry.settings["method"] == "free_at":
            entry = Entry(f"{entry.name} m={m}", dict(
                entry.settings, epochs=math.ceil(base.epochs / m),
                ramp_epochs=math.ceil(base.ramp_epochs / m)))
        entries.append(entry)
    entries += [Entry(f"pgd_at {steps} steps", dict(method="pgd_at", attack_steps=steps))
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
    """One configuration's result over its seeds (means; spreads are max - min).

    robust_error is at the radius adversarial training was trained for; robust_errors at
    each of `epsilons`, in order.
    """

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
    never_learned: int = 0  # seeds with clean error above NEVER_LEARNED
    regularizer: str = "none"
    epsilons: tuple = ()
    robust_errors: tuple = ()


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


def _stored_evaluation(path: str) -> dict:
    """A run's evaluation file, with the names of the settings renamed since it was written."""
    with open(path) as f:
        stored = deprecation.upgrade_config("frontier.json", json.load(f))
    return dict(stored, settings=training.upgrade_settings(stored.get("settings", {})))


def _evaluation(config: training.TrainConfig, path: str, x, y, epsilons: Sequence[float],
                budget: AutoAttackBudget, verbose: int) -> dict:
    """The run's AutoAttack results at `epsilons` (in config.attack_norm), from `path` if
    they were computed with the same settings (images, budget, radii), else computed and
    written whole."""
    wanted = {"epsilons": list(epsilons), "attack_norm": config.attack_norm,
              "num_images": len(x), "budget": dataclasses.asdict(budget),
              "settings": training.settings(config)}
    if os.path.exists(path):
        stored = _stored_evaluation(path)
        if {k: stored.get(k) for k in wanted} == wanted:
            return stored
    model, seconds = training.finished_run(config)
    reports = evaluation.evaluate_autoattack(
        model, x, y, epsilons=list(epsilons), attack_norm=config.attack_norm,
        num_images=len(x), budget=budget, verbose=verbose,
        name=os.path.basename(config.model_dir))
    result = dict(wanted, train_seconds=seconds, epoch_seconds=seconds / config.epochs,
                  clean_error=reports[0].clean_error,
                  robust_errors=[r.robust_error for r in reports],
                  attack_seconds=sum(sum(r.seconds.values()) for r in reports),
                  catastrophic_overfitting=_collapsed(config.model_dir))
    files.write_text(path, json.dumps(result, indent=1))
    return result


def _epsilons(epsilon: float, epsilons: Optional[Sequence[float]], attack_norm: str,
              dataset: str) -> tuple:
    """The evaluation's radii, checked, in increasing order; epsilon must be among them."""
    dims = math.prod(datasets.DATASETS[dataset].image_shape)
    checked = tuple(sorted(ball.check_epsilons((epsilon,) if epsilons is None else epsilons,
                                               attack_norm, size=dims)))
    if epsilon not in checked:
        raise ValueError(f"epsilon={epsilon!r} must be one of epsilons={list(checked)!r}: the "
                         "table's headline is the robust error at the trained radius.")
    return checked


def plan(base: training.TrainConfig, output_dir: str, *, epsilon: float,
         epsilons: Optional[Sequence[float]] = None, seeds: Sequence[int] = (0, 1),
         sizes: Optional[Mapping[str, Sequence]] = None,
         cheap: Sequence[Entry] = FAST_AND_FREE) -> tuple:
    """The runs of a frontier, every setting checked before any work (a ValueError names
    the first bad one). Arguments as for `run_frontier`.

    Returns:
      (the grid's entries, {(name, seed): the run's TrainConfig}, the radii in order).
    """
    entries = grid(base, sizes, cheap)
    if not len(seeds) or len(set(seeds)) < len(seeds):
        raise ValueError(f"seeds={list(seeds)!r} must be one or more different seeds.")
    configs = {(entry.name, seed): training.check_config(dataclasses.replace(
        base, model_dir=os.path.join(output_dir, "runs", _slug(entry.name, seed)), seed=seed,
        overwrite=False, **entry.settings)) for entry in entries for seed in seeds}
    return entries, configs, _epsilons(epsilon, epsilons, base.attack_norm, base.dataset)


def run_frontier(base: training.TrainConfig, output_dir: str, *, epsilon: float,
                 epsilons: Optional[Sequence[float]] = None, num_images: int = 500,
                 seeds: Sequence[int] = (0, 1), sizes: Optional[Mapping[str, Sequence]] = None,
                 cheap: Sequence[Entry] = FAST_AND_FREE,
                 budget: AutoAttackBudget = STANDARD_BUDGET,
                 verbose: int = 1, **renamed) -> list:
    """Trains and evaluates every configuration of the grid, each seed in its own run.

    Args:
      base: the setting shared by all runs (dataset, model, epochs, optimizer, the
        radius and norm of adversarial training, ...; `model_dir` and `method` are set
        per run).
      output_dir: runs go to OUTPUT_DIR/runs/NAME-sSEED, evaluations to
        OUTPUT_DIR/evaluations/NAME-sSEED.json.
      epsilon: the radius of the table's headline robust error (in base.attack_norm).
      epsilons: every radius each model is attacked at, epsilon among them (None: epsilon).
      num_images: test images, the same for every run.
      seeds: one run per seed and configuration.
      sizes: the grid (see `grid`); None: SMALL_GRID, FULL_GRID is the whole one.
      cheap: the single-step and free entries (see `grid`).
      budget: AutoAttack's budgets (its standard ones by default).
      verbose: 1 logs each run as it starts (INFO) and shows the attacks' progress.
      **renamed: `radii`, the old name of `epsilons` (a DeprecationWarning).

    Returns:
      One Point per configuration, Pareto-optimal ones marked.
    """
    epsilons = deprecation.renamed_keyword("run_frontier", renamed, "epsilons", epsilons)
    entries, configs, epsilons = plan(base, output_dir, epsilon=epsilon, epsilons=epsilons,
                                      seeds=seeds, sizes=sizes, cheap=cheap)
    x, y = training.test_images(base.dataset, num_images, data_dir=base.data_dir,
                                download=base.download)
    os.makedirs(os.path.join(output_dir, "evaluations"), exist_ok=True)
    results, start = {}, time.monotonic()
    for i, ((name, seed), config) in enumerate(configs.items()):
        if verbose:
            logging.getLogger(__name__).info(
                "run %d of %d: %s, seed %d; %s", i + 1, len(configs), name, seed,
                _progress_text(time.monotonic() - start, i, len(configs)))
        if not training.is_finished(config):
            training.train(config, verbose=0)
        path = os.path.join(output_dir, "evaluations", _slug(name, seed) + ".json")
        results[name, seed] = _evaluation(config, path, x, y, epsilons, budget, verbose=verbose)
    points = [_point(entry, [results[entry.name, seed] for seed in seeds], seeds, epsilons,
                     epsilons.index(epsilon)) for entry in entries]
    optimal = pareto_optimal([p.train_seconds for p in points], [p.robust_error for p in points])
    for point, best in zip(points, optimal):
        point.pareto = bool(best)
    return points


def _point(entry: Entry, rows: Sequence[dict], seeds: Sequence[int], epsilons: tuple,
           trained: int) -> Point:
    """One configuration's Point from its seeds' evaluations."""
    column = lambda key: np.array([r[key] for r in rows], float)  # noqa: E731
    robust = column("robust_errors")  # seeds x radii
    return Point(
        name=entry.name, method=entry.settings["method"], seeds=tuple(seeds),
        train_seconds=float(column("train_seconds").mean()),
        epoch_seconds=float(column("epoch_seconds").mean()),
        clean_error=float(column("clean_error").mean()),
        robust_error=float(robust[:, trained].mean()),
        robust_spread=float(np.ptp(robust[:, trained])),
        clean_spread=float(np.ptp(column("clean_error"))),
        seconds_spread=float(np.ptp(column("train_seconds"))),
        catastrophic_overfitting=int(sum(r["catastrophic_overfitting"] for r in rows)),
        never_learned=int(np.sum(column("clean_error") > NEVER_LEARNED)),
        regularizer=entry.settings.get("regularizer", "none"), epsilons=epsilons,
        robust_errors=tuple(float(e) for e in robust.mean(axis=0)))


def _slug(name: str, seed: int) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_") + f"-s{seed}"


def _norm_text(attack_norm: str) -> str:
    return "l_inf" if attack_norm == "linf" else attack_norm


def format_frontier(points: Sequence[Point], epsilon: float, num_images: int,
                    attack_norm: str = "linf") -> str:
    """The table behind the plot, fastest first; * marks the Pareto-optimal runs (on the
    robust error at epsilon, the trained radius). "failed" counts the seeds that collapsed
    (the RobustnessMonitor's verdict) or never learned (clean error above NEVER_LEARNED)."""
    epsilons = points[0].epsilons or (epsilon,)
    header = (["", "run", "train s", "s / epoch", "% clean error"]
              + [f"% robust at {e:g}" + (" (trained)" if e == epsilon and len(epsilons) > 1 else "")
                 for e in epsilons]
              + ["spread (pts)", "failed: collapsed / never learned"])
    rows = [["*" if p.pareto else "", p.name, f"{p.train_seconds:.1f}", f"{p.epoch_seconds:.2f}",
             f"{100 * p.clean_error:.1f}"]
            + [f"{100 * e:.1f}" for e in (p.robust_errors or (p.robust_error,))]
            + [f"{100 * p.robust_spread:.1f}",
               f"{p.catastrophic_overfitting} / {p.never_learned} of {len(p.seeds)}"]
            for p in sorted(points, key=lambda p: p.train_seconds)]
    return evaluation.render_table(
        f"AutoAttack (standard) robust error, {_norm_text(attack_norm)}, {num_images} test "
        f"images, mean of seeds {', '.join(map(str, points[0].seeds))} (spread: max - min at "
        f"{epsilon:g})", header, rows)


def existing_results(output_dir: str) -> list:
    """The frontier's result files already in output_dir."""
    return files.existing(output_dir, RESULT_FILES.values())


def write_frontier(points: Sequence[Point], output_dir: str, epsilon: float,
                   overwrite: bool = False, attack_norm: str = "linf",
                   recommended: Optional[str] = None) -> dict:
    """frontier.json, frontier.csv and frontier.png, replaced as one set (see
    evaluation.write_set); refuses to replace existing ones unless `overwrite`. The plot
    rings `recommended`, a configuration's name, if given.

    Returns:
      The paths written, by kind ("json", "csv", "plot").
    """
    rows = [dataclasses.asdict(p) for p in points]
    paths = evaluation.write_set(output_dir, {
        RESULT_FILES["json"]: evaluation.output.json_writer(
            {"epsilon": epsilon, "attack_norm": attack_norm, "points": rows}),
        RESULT_FILES["csv"]: evaluation.output.csv_writer(
            list(rows[0]), [list(row.values()) for row in rows]),
        RESULT_FILES["plot"]: lambda path: draw_frontier(points, epsilon, path, attack_norm,
                                                         recommended),
    }, overwrite)
    return {kind: paths[name] for kind, name in RESULT_FILES.items()}


def draw_frontier(points: Sequence[Point], epsilon: float, path: str,
                  attack_norm: str = "linf", recommended: Optional[str] = None) -> None:
    """The frontier's plot (plotting.plot_frontier) at `path`; `recommended`, a
    configuration's name, is ringed if it is one of the points."""
    from keras_gradreg import plotting  # matplotlib is imported only when plotting

    names = [p.name for p in points]
    plotting.plot_frontier(points, epsilon, path, _norm_text(attack_norm),
                           recommended if recommended in names else None)


def read_frontier(path: str) -> tuple:
    """(points, epsilon, attack_norm) of a frontier.json that write_frontier wrote (any
    version), for tables and plots made again without training or attacking anything."""
    files.finish_replacing(os.path.dirname(os.path.abspath(path)))
    with open(path) as f:
        stored = json.load(f)
    rows = [deprecation.upgrade_config("frontier.json", row) for row in stored["points"]]
    points = [Point(**{k: tuple(v) if isinstance(v, list) else v for k, v in
                       dict(row, method=deprecation.renamed_value("method", row["method"],
                                                                  warns=False)).items()})
              for row in rows]
    return points, stored["epsilon"], stored.get("attack_norm", "linf")
