"""The main job: the paper's comparison, small enough for a laptop CPU.

    python examples/reproduce.py

With no flags it trains three copies of the same small CNN on the offline MNIST digits
(undefended; the finite-difference penalty with the squared l1 norm, against l_inf
attacks; PGD adversarial training), attacks all three on the same 1,000 held-out digits
(APGD-CE, APGD-DLR and FAB-T, best attack per image, l_inf), prints the paper's table and writes
results.json, results.csv and error_vs_distance.png to OUTPUT_DIR/results. Beside it,
AutoAttack's standard cascade runs at each of the table's radii on the first
--autoattack_images of those images (the robust error the field reports), written to
OUTPUT_DIR/results/autoattack.json. Finished
models in OUTPUT_DIR are reused if they were trained with the same settings (otherwise it
stops and names the settings that differ); earlier results are never replaced without
--overwrite.
Flags scale it up (--dataset=cifar10 --model=resnext34_2x32 ..., see examples/train.py).
"""

import os

from absl import app
from absl import flags

import keras_gradreg as kg
from keras_gradreg import training
from keras_gradreg import validation

AUTOATTACK_IMAGES = 200
"""Images AutoAttack runs on by default, so that the main job stays within 10 minutes on
2 CPU cores: on 100 it took 73 s of a 5.8-minute job (2026-12-02; see the README)."""

flags.DEFINE_string("output_dir", "runs/reproduce", "Models go to OUTPUT_DIR/<method>, results "
                    "to OUTPUT_DIR/results.")
flags.DEFINE_enum("dataset", "offline_mnist", list(kg.data.DATASETS), "Dataset.")
flags.DEFINE_enum("model", "small_cnn", list(kg.architectures.MODELS), "Architecture, the same for all.")
flags.DEFINE_integer("epochs", 10, "Epochs for every method.", lower_bound=1)
flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_float("penalty_weight", 10.0, "lambda of the squared l1 penalty (measured better "
                   "here than the paper's 0.1-1 for CIFAR).", lower_bound=0)
flags.DEFINE_float("h", 0.1, "Finite-difference step, in [0, 1] pixel units.")
flags.DEFINE_integer("penalty_every", 1, "Penalise every k-th step only, with k x lambda "
                     "(lazy regularisation; cheaper).", lower_bound=1)
flags.DEFINE_float("at_epsilon", 0.3, "PGD-AT radius (l_inf) at full strength.")
flags.DEFINE_integer("at_ramp_epochs", 5, "Epochs over which the PGD-AT radius ramps up from 0.")
flags.DEFINE_list("epsilons", None, "l_inf radii of the table; default: the dataset's "
                  "(0.1, 0.2, 0.3 for digits; 2/255, 8/255 for CIFAR and ImageNet).")
flags.DEFINE_integer("num_images", 1000, "Test images attacked.", lower_bound=1)
flags.DEFINE_integer("autoattack_images", AUTOATTACK_IMAGES, "AutoAttack runs on the first N "
                     "of the attacked images (0: not at all).", lower_bound=0)
flags.DEFINE_enum("autoattack_budget", "standard", list(kg.autoattack.BUDGETS),
                  "AutoAttack's own budgets (standard), or 20 iterations and 1,000 queries "
                  "(quick; not for reporting).")
flags.DEFINE_integer("train_limit", None, "Train on the first N images only (quick trials).")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_string("data_dir", None, "TFDS data directory.")
flags.DEFINE_bool("overwrite", False, "Retrain the models and replace earlier results.")
FLAGS = flags.FLAGS

METHODS = {"undefended": "plain", "gradreg_l1": "gradreg", "pgd_at": "pgd_at"}


def _results_dir() -> str:
    return os.path.join(FLAGS.output_dir, "results")


def _checked_flags() -> tuple:
    """(epsilons, the three runs' configs), every flag checked before any work."""
    results_dir = _results_dir()
    existing = (kg.evaluation.existing_results(results_dir)
                + kg.evaluation.existing_results(results_dir, "autoattack"))
    if existing and not FLAGS.overwrite:
        raise FileExistsError(f"{existing} already exist(s); pass --overwrite or another --output_dir.")
    epsilons = kg.evaluation.check_radii(
        FLAGS.epsilons or kg.data.DATASETS[FLAGS.dataset].radii["linf"], "linf")
    configs = {name: training.validate(training.TrainConfig(
        model_dir=os.path.join(FLAGS.output_dir, name), dataset=FLAGS.dataset,
        model=FLAGS.model, method=method, penalty_weight=FLAGS.penalty_weight, h=FLAGS.h,
        attack_norm="linf", penalty_every=FLAGS.penalty_every, at_epsilon=FLAGS.at_epsilon,
        at_ramp_epochs=FLAGS.at_ramp_epochs,
        epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
        seed=FLAGS.seed, data_dir=FLAGS.data_dir, train_limit=FLAGS.train_limit,
        overwrite=FLAGS.overwrite)) for name, method in METHODS.items()}  # all, before any work
    if not FLAGS.overwrite:  # finished runs are reused, runs of other settings refused
        for config in configs.values():
            training.check_settings(config)
    return epsilons, configs


def main(argv):
    del argv
    with validation.exit_on_bad_value("reproduce.py"):
        epsilons, configs = _checked_flags()
    runs = {}
    for name, config in configs.items():
        finished = None if FLAGS.overwrite else training.finished_run(config)
        if finished:
            print(f"{name}: reusing the finished model in {config.model_dir}")
            runs[name] = finished
        else:
            print(f"{name}: training ({config.method})")
            model, _, seconds = training.train(config)
            runs[name] = (model, seconds)
    x, y = training.test_images(FLAGS.dataset, FLAGS.num_images, data_dir=FLAGS.data_dir)
    reports = []
    for name, (model, seconds) in runs.items():
        print(f"{name}: attacking {len(x)} test images")
        reports.append(kg.evaluate_robustness(model, x, y, attack_norm="linf", epsilons=epsilons,
                                              num_images=FLAGS.num_images, seed=FLAGS.seed,
                                              name=name, training_time=seconds, verbose=1))
    print()
    print(kg.format_table(reports))
    print(f"gradreg_l1: lambda={FLAGS.penalty_weight}, h={FLAGS.h}, squared l1 norm (against l_inf), "
          f"penalised every {FLAGS.penalty_every} step(s); "
          f"pgd_at: {kg.adversarial_training.AT_STEPS}-step PGD at l_inf {FLAGS.at_epsilon}, "
          f"radius ramped linearly from 0 over the first {FLAGS.at_ramp_epochs} epochs; "
          f"{FLAGS.epochs} epochs, Adam lr {FLAGS.learning_rate}, batch {FLAGS.batch_size} for all.")
    for report in reports:
        for check in report.checks:
            if not check.passed:
                print(f"WARNING {report.name}: sanity check {check.name!r} failed: {check.detail}")
    cascade = []
    if FLAGS.autoattack_images:
        subset = slice(0, min(FLAGS.autoattack_images, len(x)))  # images of the table, in order
        by_name = {report.name: report for report in reports}
        for name, (model, _) in runs.items():
            print(f"{name}: AutoAttack on {subset.stop} images at {', '.join(map(str, epsilons))}")
            cascade += kg.evaluate_autoattack(
                model, x[subset], y[subset], epsilons=epsilons, num_images=subset.stop,
                seed=FLAGS.seed, name=name, budget=kg.autoattack.BUDGETS[FLAGS.autoattack_budget],
                adversarial=by_name[name].adversarial[subset], verbose=1)
        same_images = [by_name[r.name].error_at(r.epsilon, images=range(subset.stop))
                       for r in cascade]
        print()
        print(kg.evaluation.format_autoattack_table(cascade, same_images))
    paths = list(kg.write_results(reports, _results_dir(), overwrite=FLAGS.overwrite).values())
    if cascade:
        paths.append(kg.evaluation.write_autoattack_results(cascade, _results_dir(),
                                                            overwrite=FLAGS.overwrite))
    print("wrote", ", ".join(paths))


if __name__ == "__main__":
    app.run(main)
