"""Attacks saved models on the same test images and reports them as the paper does.

    python examples/evaluate.py --model_path=runs/plain/model.keras \
        --model_path=runs/gradreg/model.keras --attack_norm=linf --output_dir=runs/eval

Prints the table (clean error, error at each epsilon, mean distance, training time when
known) and writes results.json, results.csv and error_vs_distance.png to OUTPUT_DIR,
refusing to replace earlier results unless --overwrite is given.

    python examples/evaluate.py --protocol=autoattack --epsilons=0.3 \
        --model_path=runs/gradreg/model.keras --output_dir=runs/eval

runs AutoAttack's standard cascade (APGD-CE, APGD-T, FAB-T, Square) at each radius and
writes the robust error and accuracy, after each attack too, to OUTPUT_DIR/autoattack.json.
"""

import os

from absl import app
from absl import flags

import keras_gradreg as kg
import shared_flags
from keras_gradreg import training
from keras_gradreg import validation

flags.DEFINE_multi_string("model_path", None, "A saved .keras model (repeat the flag).",
                          required=True)
flags.DEFINE_enum("protocol", "minimum_distance", list(kg.evaluation.PROTOCOLS),
                  "minimum_distance: each image's smallest adversarial distance, the paper's "
                  "table; autoattack: robust error at each radius under AutoAttack's cascade.")
flags.DEFINE_string("output_dir", None, "Where results go.", required=True)
shared_flags.define_training_flags(only=("dataset", "attack_norm", "batch_size", "seed",
                                         "data_dir", "overwrite"))
shared_flags.define_evaluation_flags(top_k=True, attacks=True)
FLAGS = flags.FLAGS


def _load(path: str) -> tuple:
    """(model, training seconds) of a saved model, or an error naming the file."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"--model_path {path} does not exist.")
    try:
        model = kg.layers.load_model(path)
    except Exception as error:  # Keras raises many kinds for a damaged file
        raise ValueError(f"--model_path {path} cannot be loaded ({type(error).__name__}: "
                         f"{error}); no model was attacked.") from error
    return model, training.training_seconds(os.path.dirname(path))


def main(argv):
    del argv
    with validation.exit_on_bad_value("evaluate.py"):
        kg.attacks.ball.check_norm(FLAGS.attack_norm)
        epsilons = shared_flags.evaluation_epsilons(FLAGS.dataset, FLAGS.attack_norm)
        top_k = 1 if FLAGS.top_k is None else FLAGS.top_k
        attacks = kg.evaluation.check_attacks(shared_flags.given_attacks(), FLAGS.attack_norm,
                                               FLAGS.protocol, top_k)
        shared_flags.refuse_existing(kg.evaluation.existing_results(FLAGS.output_dir,
                                                                    FLAGS.protocol))
        models = {path: _load(path) for path in FLAGS.model_path}  # every one, before any attack
    x, y = training.test_images(FLAGS.dataset, FLAGS.num_images, data_dir=FLAGS.data_dir)
    common = dict(attack_norm=FLAGS.attack_norm, attacks=attacks, num_images=FLAGS.num_images,
                  batch_size=FLAGS.batch_size, seed=FLAGS.seed)
    name = lambda path: os.path.basename(os.path.dirname(os.path.abspath(path)))
    if FLAGS.protocol == "autoattack":
        reports = [report for path, (model, _) in models.items()
                   for report in kg.evaluate_autoattack(
                       model, x, y, epsilons=epsilons, name=name(path),
                       budget=kg.attacks.BUDGETS[FLAGS.autoattack_budget], **common)]
        print(kg.evaluation.format_autoattack_table(reports))
        print("wrote", kg.evaluation.write_autoattack_results(reports, FLAGS.output_dir,
                                                              overwrite=FLAGS.overwrite))
        return
    reports = [kg.evaluate_robustness(model, x, y, epsilons=epsilons, name=name(path),
                                      training_time=seconds, top_k=top_k, **common)
               for path, (model, seconds) in models.items()]
    print(kg.format_table(reports))
    paths = kg.write_results(reports, FLAGS.output_dir, overwrite=FLAGS.overwrite)
    print("wrote", ", ".join(paths.values()))


if __name__ == "__main__":
    app.run(main)
