"""Robustness per unit of training cost: the penalty against single-step, free and PGD
adversarial training, in one regime at a time.

    python examples/frontier.py --regime=collapse

trains, in the chosen regime (examples/regimes.py: linf_small, the main job's setting and
the default; collapse; l2; smooth_linf; smooth_l2), plain training, the finite-difference
penalty over a grid of lambda and penalty_every, the regime's single-step methods
(FGSM-RS, N-FGSM, FGSM-RS with each regulariser; free training in linf_small) and PGD
adversarial training (3 and 7 steps), each with the regime's seeds; evaluates every run
with AutoAttack's standard cascade at the regime's radii on the same test images; and
writes OUTPUT_DIR/frontier.{json,csv,png}: robust and clean error against the wall time
of training, Pareto-optimal runs marked, and robust error against the radius.
--full_grid runs the whole grid of the penalty (lambda 1, 3, 10, 30 x penalty_every 1, 2,
4); --penalty_weights, --penalty_every and --pgd_steps set any part of it, and the
training flags (--epochs, --h, ...) any setting of the regime. Killed, it resumes:
finished runs and evaluations of the same settings are reused; results are never
replaced without --overwrite.

    python examples/frontier.py --regime=l2 --redraw=docs/data/frontier_l2.json --output_dir=out

draws OUTPUT_DIR/frontier.png again from a frontier.json (any version's), ringing the
regime's recommendation, and prints its table: nothing is trained or attacked.
"""

import os

from absl import app
from absl import flags
from absl import logging

import keras_gradreg as kg
import regimes
import shared_flags
from keras_gradreg import validation

flags.DEFINE_enum("regime", "linf_small", list(regimes.REGIMES), "The setting compared in.")
flags.DEFINE_string("output_dir", None, "Runs, evaluations and results go here (default: "
                    "runs/frontier/REGIME).")
shared_flags.define_training_flags(
    exclude=("model_dir", "method", "penalty_weight", "penalty_every", "attack_steps",
             "regularizer", "regularizer_weight", "coordinator_address", "num_processes",
             "process_id", "coordinator_timeout"), unset=True)
shared_flags.define_evaluation_flags(num_images=None)
flags.DEFINE_list("seeds", None, "One run per seed and configuration (default: the regime's).")
flags.DEFINE_bool("full_grid", False, "lambda 1, 3, 10, 30 x penalty_every 1, 2, 4.")
flags.DEFINE_list("penalty_weights", None, "The penalty's lambdas (default: the regime's).")
flags.DEFINE_list("penalty_every", None, "The penalty's k's, lazy regularisation (default: "
                  "the regime's).")
flags.DEFINE_list("pgd_steps", None, "PGD adversarial training's step counts (default: the "
                  "regime's).")
flags.DEFINE_string("redraw", None, "A frontier.json to draw OUTPUT_DIR/frontier.png from, "
                    "and print the table of, instead of running the regime.")
FLAGS = flags.FLAGS


def _parse(flag, text, kind):
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"--{flag}: {text!r} is not {'an integer' if kind is int else 'a number'}."
                         ) from None


def _checked_flags() -> dict:
    """run_frontier's arguments, every flag checked before any work. --epsilon sets the
    trained radius and, without --epsilons, the only one attacked."""
    regime = regimes.REGIMES[FLAGS.regime]
    output_dir = FLAGS.output_dir or f"runs/frontier/{FLAGS.regime}"
    shared_flags.refuse_existing(kg.frontier.existing_results(output_dir))
    base = shared_flags.training_config(regime.settings, model_dir="")
    epsilons = regime.epsilons if FLAGS.epsilon is None else [base.epsilon]
    if FLAGS.epsilons is not None:
        epsilons = [_parse("epsilons", r, float) for r in FLAGS.epsilons]
    seeds = [_parse("seeds", s, int) for s in FLAGS.seeds] if FLAGS.seeds else regime.seeds
    sizes = dict(kg.frontier.FULL_GRID if FLAGS.full_grid else regime.sizes)
    chosen = {"penalty_weight": ("penalty_weights", float), "penalty_every": ("penalty_every", int),
              "pgd_steps": ("pgd_steps", int)}
    for key, (flag, kind) in chosen.items():
        if FLAGS[flag].value is not None:
            sizes[key] = [_parse(flag, v, kind) for v in FLAGS[flag].value]
    run = dict(base=base, output_dir=output_dir, epsilon=base.epsilon, epsilons=epsilons,
               seeds=seeds, sizes=sizes, cheap=regime.cheap)
    kg.frontier.plan(**run)
    num_images = regime.num_images if FLAGS.num_images is None else FLAGS.num_images
    return dict(run, num_images=num_images,
                budget=kg.attacks.BUDGETS[FLAGS.autoattack_budget])


def redraw(path: str) -> None:
    """The plot (OUTPUT_DIR/frontier.png) and the table of a frontier.json, again."""
    regime = regimes.REGIMES[FLAGS.regime]
    output_dir = FLAGS.output_dir or f"runs/frontier/{FLAGS.regime}"
    with validation.exit_on_bad_value("frontier.py"):
        if not os.path.exists(path):
            raise FileNotFoundError(f"--redraw {path} does not exist.")
        plot = os.path.join(output_dir, kg.frontier.RESULT_FILES["plot"])
        shared_flags.refuse_existing([plot] if os.path.exists(plot) else [])
    points, epsilon, norm = kg.frontier.read_frontier(path)
    os.makedirs(output_dir, exist_ok=True)
    with kg.files.replaced_atomically(plot) as temporary:
        kg.frontier.draw_frontier(points, epsilon, temporary, norm, regime.recommended)
    print(kg.frontier.format_frontier(points, epsilon, regime.num_images, norm))
    print("wrote", plot)


def main(argv):
    del argv
    if FLAGS.redraw:
        redraw(FLAGS.redraw)
        return
    with validation.exit_on_bad_value("frontier.py"):
        run = _checked_flags()
    logging.set_verbosity(logging.INFO)  # each run's start, and the attacks' stages
    points = kg.frontier.run_frontier(**run)
    norm = run["base"].attack_norm
    print()
    print(kg.frontier.format_frontier(points, run["epsilon"], run["num_images"], norm))
    paths = kg.frontier.write_frontier(
        points, run["output_dir"], run["epsilon"], overwrite=bool(FLAGS.overwrite),
        attack_norm=norm, recommended=regimes.REGIMES[FLAGS.regime].recommended)
    print("wrote", ", ".join(paths.values()))


if __name__ == "__main__":
    app.run(main)
