"""Robustness per unit of training cost: the penalty against single-step, free and PGD
adversarial training, in one regime at a time.

    python examples/frontier.py --regime=collapse

trains, in the chosen regime (keras_gradreg.frontier.REGIMES: linf_small, the main job's
setting and the default; collapse; l2; smooth_linf; smooth_l2), plain training, the
finite-difference penalty over a grid of lambda and penalty_every, the regime's
single-step methods (FGSM from a random start, N-FGSM, FGSM with each regulariser;
free training in linf_small) and PGD adversarial training (3 and 7 steps), each with the
regime's seeds; evaluates every run with AutoAttack's standard cascade at the regime's
radii on the same test digits; and writes OUTPUT_DIR/frontier.{json,csv,png}: robust and
clean error against the wall time of training, Pareto-optimal runs marked, and robust
error against the radius. --full_grid runs the whole grid of the penalty (lambda 1, 3,
10, 30 x penalty_every 1, 2, 4); --penalty_weights, --penalty_every and --pgd_steps set
any part of it. Killed, it resumes: finished runs and evaluations of the same settings
are reused; results are never replaced without --overwrite.
"""

from absl import app
from absl import flags

import keras_gradreg as kg
from keras_gradreg import validation

flags.DEFINE_enum("regime", "linf_small", list(kg.frontier.REGIMES), "The setting compared in.")
flags.DEFINE_string("output_dir", None, "Runs, evaluations and results go here (default: "
                    "runs/frontier/REGIME).")
flags.DEFINE_float("epsilon", None, "The headline radius, the regime's norm (default: the "
                   "regime's); adversarial training's radius too, unless --at_epsilon.")
flags.DEFINE_list("radii", None, "Every radius each model is attacked at, --epsilon among "
                  "them (default: the regime's, or --epsilon alone when it is given).")
flags.DEFINE_float("at_epsilon", None, "Adversarial training's radius (default: --epsilon).")
flags.DEFINE_integer("num_images", None, "Test digits every run is attacked on (default: the "
                     "regime's).", lower_bound=1)
flags.DEFINE_list("seeds", None, "One run per seed and configuration (default: the regime's).")
flags.DEFINE_bool("full_grid", False, "lambda 1, 3, 10, 30 x penalty_every 1, 2, 4.")
flags.DEFINE_list("penalty_weights", None, "The penalty's lambdas (default: the regime's).")
flags.DEFINE_list("penalty_every", None, "The penalty's k's, lazy regularisation (default: "
                  "the regime's).")
flags.DEFINE_list("pgd_steps", None, "PGD adversarial training's step counts (default: the "
                  "regime's).")
flags.DEFINE_integer("epochs", None, "Epochs (free training: epochs / m; default: the "
                     "regime's).")
flags.DEFINE_float("h", None, "The penalty's finite-difference step (default: the regime's).")
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


def _given(flag, default):
    return default if FLAGS[flag].value is None else FLAGS[flag].value


def _checked_flags() -> dict:
    """run_frontier's arguments, every flag checked before any work."""
    regime = kg.frontier.REGIMES[FLAGS.regime]
    output_dir = _given("output_dir", f"runs/frontier/{FLAGS.regime}")
    existing = kg.frontier.existing_results(output_dir)
    if existing and not FLAGS.overwrite:
        raise FileExistsError(f"{existing} already exist(s); pass --overwrite or another --output_dir.")
    epsilon = _given("epsilon", regime.epsilon)
    radii = regime.radii if FLAGS.epsilon is None else [epsilon]
    if FLAGS.radii is not None:
        radii = [_parse("radii", r, float) for r in FLAGS.radii]
    seeds = [_parse("seeds", s, int) for s in FLAGS.seeds] if FLAGS.seeds else regime.seeds
    sizes = dict(kg.frontier.FULL_GRID if FLAGS.full_grid else regime.sizes)
    chosen = {"penalty_weight": ("penalty_weights", float), "penalty_every": ("penalty_every", int),
              "pgd_steps": ("pgd_steps", int)}
    for key, (flag, kind) in chosen.items():
        if FLAGS[flag].value is not None:
            sizes[key] = [_parse(flag, v, kind) for v in FLAGS[flag].value]
    changes = {flag: FLAGS[flag].value for flag in ("epochs", "h") if FLAGS[flag].value is not None}
    base = regime.base(train_limit=FLAGS.train_limit, at_epsilon=_given("at_epsilon", epsilon),
                       **changes)
    run = dict(base=base, output_dir=output_dir, epsilon=epsilon, radii=radii, seeds=seeds,
               sizes=sizes, cheap=regime.cheap)
    kg.frontier.plan(**run)
    return dict(run, num_images=_given("num_images", regime.num_images),
                budget=kg.autoattack.BUDGETS[FLAGS.autoattack_budget])


def main(argv):
    del argv
    with validation.exit_on_bad_value("frontier.py"):
        run = _checked_flags()
    points = kg.frontier.run_frontier(**run)
    norm = run["base"].at_norm
    print()
    print(kg.frontier.format_frontier(points, run["epsilon"], run["num_images"], norm))
    paths = kg.frontier.write_frontier(points, run["output_dir"], run["epsilon"],
                                       overwrite=FLAGS.overwrite, attack_norm=norm)
    print("wrote", ", ".join(paths.values()))


if __name__ == "__main__":
    app.run(main)
