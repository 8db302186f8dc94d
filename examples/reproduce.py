"""The main job, and the paper's experiments: train a set of models alike but for their
method, attack them alike, print the paper's table and AutoAttack's.

    python examples/reproduce.py

With no flags it runs the main job (examples/experiments.py, MAIN): three copies of the
same small CNN on the offline MNIST digits (undefended; the finite-difference penalty
with the squared l1 norm, against l_inf attacks; 7-step PGD adversarial training),
attacked on the same 1,000 held-out digits (APGD-CE, APGD-DLR and FAB-T, best attack per
image, l_inf): the paper's table, and AutoAttack's standard cascade on the first 200 of
them at each radius. It writes results.json, results.csv, error_vs_distance.png and
autoattack.json to OUTPUT_DIR/results. --experiment chooses another experiment; its
settings are defaults only: every flag given wins.

Finished models in OUTPUT_DIR are reused if they were trained with the same settings
(otherwise it stops and names the settings that differ), an interrupted one resumes, and
earlier results are never replaced without --overwrite.
"""

import os

from absl import app
from absl import flags

import keras_gradreg as kg
import experiments
import shared_flags
from keras_gradreg import training
from keras_gradreg import validation

flags.DEFINE_enum("experiment", "main", list(experiments.EXPERIMENTS), "What to reproduce.")
flags.DEFINE_list("runs", None, "Which of the experiment's runs to train and attack (default: "
                  "all), e.g. the ones one machine has the time for.")
flags.DEFINE_string("output_dir", None, "Models go to OUTPUT_DIR/<name>, results to "
                    "OUTPUT_DIR/results (default: runs/reproduce for the main job, "
                    "runs/EXPERIMENT otherwise).")
shared_flags.define_training_flags(
    exclude=("model_dir", "method", "coordinator_address", "num_processes", "process_id",
             "coordinator_timeout"), unset=True)
shared_flags.define_evaluation_flags(num_images=None, top_k=True, attacks=True)
flags.DEFINE_integer("autoattack_images", None, "AutoAttack runs on the first N of the "
                     "attacked images (0: not at all; default: the experiment's).",
                     lower_bound=0)
FLAGS = flags.FLAGS


def _output_dir() -> str:
    default = "runs/reproduce" if FLAGS.experiment == "main" else f"runs/{FLAGS.experiment}"
    return FLAGS.output_dir or default


def _given(name: str, default):
    return default if FLAGS[name].value is None else FLAGS[name].value


def _checked_flags() -> dict:
    """The experiment, the runs' configs, the tables' norm, radii and top-k, every flag
    checked before any work."""
    experiment = experiments.EXPERIMENTS[FLAGS.experiment]
    results_dir = os.path.join(_output_dir(), "results")
    shared_flags.refuse_existing(kg.evaluation.existing_results(results_dir)
                                 + kg.evaluation.existing_results(results_dir, "autoattack"))
    names = [name for name, _ in experiment.runs]
    for name in FLAGS.runs or ():
        validation.check_choice("--runs", name, tuple(names))
    configs = {name: training.check_config(shared_flags.training_config(
        dict(experiment.settings, **run), model_dir=os.path.join(_output_dir(), name),
        method=run["method"])) for name, run in experiment.runs
        if name in (FLAGS.runs or names)}  # all, before any work
    first = next(iter(configs.values()))
    norm = experiment.table_norm or first.attack_norm
    epsilons = kg.attacks.ball.check_epsilons(
        FLAGS.epsilons or experiment.epsilons
        or kg.datasets.DATASETS[first.dataset].epsilons[norm], norm)
    top_k = _given("top_k", experiment.top_k)
    attacks = kg.evaluation.check_attacks(shared_flags.given_attacks(), norm,
                                          "minimum_distance", top_k)
    if not FLAGS.overwrite:  # finished runs are reused, runs of other settings refused
        for config in configs.values():
            training.check_settings(config)
    return dict(experiment=experiment, configs=configs, norm=norm, epsilons=epsilons,
                top_k=top_k, attacks=attacks)


METHOD_NAMES = {"pgd_at": "PGD", "trades": "TRADES", "fgsm_rs": "FGSM-RS", "n_fgsm": "N-FGSM",
                "free_at": "free adversarial training"}
NORM_NAMES = {"linf": "l_inf", "l2": "l2", "l1": "l1"}


def describe(configs: dict) -> str:
    """One line saying how the runs differ and what they share."""
    parts = []
    for name, c in configs.items():
        norm = NORM_NAMES[c.attack_norm]
        if c.method == "gradreg":
            parts.append(f"{name}: lambda={c.penalty_weight:g}, h={c.h:g}, squared "
                         f"{kg.DUAL_NORMS[c.attack_norm]} norm (against {norm}), "
                         f"penalised every {c.penalty_every} step(s)")
        elif c.method in training.ADVERSARIAL:
            steps = f"{c.attack_steps}-step " if c.attack_steps else ""
            ramp = (f"radius ramped linearly from 0 over the first {c.ramp_epochs} epochs"
                    if c.ramp_epochs else "no radius ramp")
            parts.append(f"{name}: {steps}{METHOD_NAMES[c.method]} at {norm} {c.epsilon:g}, "
                         f"{ramp}")
    c = next(iter(configs.values()))
    optimizer = "Adam" if c.optimizer == "adam" else "SGD (momentum 0.9)"
    extras = "".join([f", {c.schedule} schedule" if c.schedule != "constant" else "",
                      f", L2 weight decay {c.l2:g}" if c.l2 else "",
                      f", weight decay {c.weight_decay:g}" if c.weight_decay else "",
                      ", cutout" if c.cutout else ""])
    parts.append(f"{c.epochs} epochs, {optimizer} lr {c.learning_rate}{extras}, batch "
                 f"{c.batch_size} for all.")
    return "; ".join(parts)


def format_published(experiment: experiments.Experiment) -> str:
    """The paper's own table for the experiment, as ours is printed."""
    header = (["model", "% clean error"] + [f"% error at {e:.4g}" for e in experiment.epsilons]
              + ["mean distance", "training time (h)"])
    rows = [[name, f"{clean:.2f}"] + [f"{e:.2f}" for e in errors] + [f"{distance:.3e}",
                                                                      f"{hours:.3g}"]
            for name, clean, errors, distance, hours in experiment.published]
    error = f"top-{experiment.top_k} error" if experiment.top_k > 1 else "top-1 error"
    return kg.evaluation.render_table(
        f"published (Finlay & Oberman 2019, Table 1: their attacks CW, Boundary, LogBarrier "
        f"and PGD, best per image, 1000 images, {error}; hours on their GPUs)", header, rows)


def main(argv):
    del argv
    with validation.exit_on_bad_value("reproduce.py"):
        plan = _checked_flags()
    experiment, configs, epsilons = plan["experiment"], plan["configs"], plan["epsilons"]
    runs = {}
    for name, config in configs.items():
        finished = None if config.overwrite else training.finished_run(config)
        if finished:
            print(f"{name}: reusing the finished model in {config.model_dir}")
            runs[name] = finished
        else:
            print(f"{name}: training ({config.method})")
            model, _, seconds = training.train(config)
            runs[name] = (model, seconds)
    first = next(iter(configs.values()))
    num_images = _given("num_images", experiment.num_images)
    x, y = training.test_images(first.dataset, num_images, data_dir=first.data_dir)
    reports = []
    for name, (model, seconds) in runs.items():
        print(f"{name}: attacking {len(x)} test images")
        reports.append(kg.evaluate_robustness(model, x, y, attack_norm=plan["norm"],
                                              attacks=plan["attacks"], epsilons=epsilons,
                                              num_images=num_images,
                                              seed=first.seed, name=name,
                                              training_time=seconds, top_k=plan["top_k"],
                                              verbose=1))
    print()
    print(kg.format_table(reports))
    print(describe(configs))
    if experiment.published:
        print()
        print(format_published(experiment))
    for report in reports:
        for check in report.checks:
            if not check.passed:
                print(f"WARNING {report.name}: sanity check {check.name!r} failed: {check.detail}")
    cascade = []
    autoattack_images = min(_given("autoattack_images", experiment.autoattack_images), len(x))
    if autoattack_images:
        subset = slice(0, autoattack_images)  # images of the table, in order
        by_name = {report.name: report for report in reports}
        for name, (model, _) in runs.items():
            print(f"{name}: AutoAttack on {autoattack_images} images at "
                  f"{', '.join(map(str, epsilons))}")
            cascade += kg.evaluate_autoattack(
                model, x[subset], y[subset], epsilons=epsilons, attack_norm=plan["norm"],
                num_images=autoattack_images, seed=first.seed, name=name,
                budget=kg.attacks.BUDGETS[FLAGS.autoattack_budget],
                adversarial=by_name[name].adversarial[subset], verbose=1)
        same_images = [by_name[r.name].error_at(r.epsilon, images=range(autoattack_images))
                       for r in cascade]
        print()
        print(kg.evaluation.format_autoattack_table(cascade, same_images))
    results_dir = os.path.join(_output_dir(), "results")
    paths = list(kg.write_results(reports, results_dir, overwrite=FLAGS.overwrite).values())
    if cascade:
        paths.append(kg.evaluation.write_autoattack_results(cascade, results_dir,
                                                            overwrite=FLAGS.overwrite))
    print("wrote", ", ".join(paths))


if __name__ == "__main__":
    app.run(main)
