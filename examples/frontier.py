"""Robustness per unit of training cost: the penalty against fast, free and PGD adversarial
training, on the main job's setting.

    python examples/frontier.py

trains plain, the finite-difference penalty over a grid of lambda and penalty_every,
fast (FGSM from a random start), free and PGD adversarial training (3 and 7 steps), each
with two seeds, evaluates every run with AutoAttack's standard cascade at --epsilon on
the same test digits, and writes OUTPUT_DIR/frontier.{json,csv,png}: robust and clean
error against the wall time of training, Pareto-optimal runs marked. --full_grid runs
the whole grid (lambda 1, 3, 10, 30 x penalty_every 1, 2, 4); --penalty_weights,
--penalty_every and --pgd_steps set any part of it. Killed, it resumes: finished
runs and evaluations of the same settings are reused; results are never replaced
without --overwrite.
"""

import dataclasses

from absl import app
from absl import flags

import keras_gradreg as kg
from keras_gradreg import training
from keras_gradreg import validation

_MAIN_JOB = training.TrainConfig(model_dir="", h=0.1, attack_norm="linf", at_epsilon=0.1)
flags.DEFINE_string("output_dir", "runs/frontier", "Runs, evaluations and results go here.")
flags.DEFINE_float("epsilon", 0.1, "l_inf radius of the robust error (and adversarial "
                   "training's radius, unless --at_epsilon).")
flags.DEFINE_float("at_epsilon", None, "Adversarial training's radius (default: --epsilon).")
flags.DEFINE_integer("num_images", 500, "Test digits every run is attacked on.", lower_bound=1)
flags.DEFINE_list("seeds", ["0", "1"], "One run per seed and configuration.")
flags.DEFINE_bool("full_grid", False, "lambda 1, 3, 10, 30 x penalty_every 1, 2, 4.")
flags.DEFINE_list("penalty_weights", None, "The penalty's lambdas (default: the grid's).")
flags.DEFINE_list("penalty_every", None, "The penalty's k's, lazy regularisation (default: "
                  "the grid's).")
flags.DEFINE_list("pgd_steps", None, "PGD adversarial training's step counts (default: the "
                  "grid's).")
flags.DEFINE_integer("epochs", _MAIN_JOB.epochs, "Epochs (free training: epochs / m).")
flags.DEFINE_float("h", _MAIN_JOB.h, "The penalty's finite-difference step.")
flags.DEFINE_integer("train_limit", None, "Train on the first N images only (quick trials).")
flags.DEFINE_enum("autoattack_budget", "standard", list(kg.autoattack.BUDGETS),
                  "AutoAttack's own budgets (standard), or 20 iterations and 1,000 queries "
                  "(quick; not for reporting).")
flags.DEFINE_bool("overwrite", False, "Replace earlier results (runs and evaluations are "
                  "reused whenever their settings match).")
FLAGS = flags.FLAGS


def _parse(flag, text, kind):
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"--{flag}: {text!r} is not {'an integer' if kind is int else 'a number'}."
                         ) from None


def _checked_flags() -> tuple:
    """(base config, seeds, grid sizes), every flag checked before any work."""
    existing = kg.frontier.existing_results(FLAGS.output_dir)
    if existing and not FLAGS.overwrite:
        raise FileExistsError(f"{existing} already exist(s); pass --overwrite or another --output_dir.")
    seeds = [_parse("seeds", s, int) for s in FLAGS.seeds]
    sizes = dict(kg.frontier.FULL_GRID if FLAGS.full_grid else kg.frontier.SMALL_GRID)
    chosen = {"penalty_weight": ("penalty_weights", float), "penalty_every": ("penalty_every", int),
              "pgd_steps": ("pgd_steps", int)}
    for key, (flag, kind) in chosen.items():
        if FLAGS[flag].value is not None:
            sizes[key] = [_parse(flag, v, kind) for v in FLAGS[flag].value]
    base = dataclasses.replace(_MAIN_JOB, epochs=FLAGS.epochs, h=FLAGS.h,
                               train_limit=FLAGS.train_limit,
                               at_epsilon=FLAGS.epsilon if FLAGS.at_epsilon is None else FLAGS.at_epsilon)
    kg.frontier.plan(base, FLAGS.output_dir, epsilon=FLAGS.epsilon, seeds=seeds, sizes=sizes)
    return base, seeds, sizes


def main(argv):
    del argv
    with validation.exit_on_bad_value("frontier.py"):
        base, seeds, sizes = _checked_flags()
    points = kg.frontier.run_frontier(base, FLAGS.output_dir, epsilon=FLAGS.epsilon,
                                      num_images=FLAGS.num_images, seeds=seeds,
                                      sizes=sizes,
                                      budget=kg.autoattack.BUDGETS[FLAGS.autoattack_budget])
    print()
    print(kg.frontier.format_frontier(points, FLAGS.epsilon, FLAGS.num_images))
    paths = kg.frontier.write_frontier(points, FLAGS.output_dir, FLAGS.epsilon,
                                       overwrite=FLAGS.overwrite)
    print("wrote", ", ".join(paths.values()))


if __name__ == "__main__":
    app.run(main)
