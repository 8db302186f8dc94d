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
import keras

import keras_gradreg as kg
from keras_gradreg import training
from keras_gradreg import validation

flags.DEFINE_multi_string("model_path", None, "A saved .keras model (repeat the flag).",
                          required=True)
flags.DEFINE_enum("dataset", "offline_mnist", list(kg.data.DATASETS), "Dataset of the test images.")
flags.DEFINE_enum("attack_norm", "linf", list(kg.primitives.BALL_NORMS), "Attack norm.")
flags.DEFINE_list("epsilons", None, "Radii: of the error-at-epsilon columns, or where "
                  "AutoAttack runs; default: the dataset's for the attack norm (l_inf: 0.1, 0.2, "
                  "0.3 for digits; 2/255, 8/255 for CIFAR and ImageNet).")
flags.DEFINE_enum("protocol", "minimum_distance", list(kg.evaluation.PROTOCOLS),
                  "minimum_distance: each image's smallest adversarial distance, the paper's "
                  "table; autoattack: robust error at each radius under AutoAttack's cascade.")
flags.DEFINE_list("attacks", None, f"Attacks, from {sorted(kg.ATTACKS)}, or 'autoattack' for "
                  "AutoAttack's in the minimum-distance protocol; default: by attack norm "
                  "(minimum_distance), AutoAttack's standard cascade (autoattack).")
flags.DEFINE_enum("autoattack_budget", "standard", list(kg.autoattack.BUDGETS),
                  "--protocol=autoattack: AutoAttack's own budgets (standard), or 20 "
                  "iterations and 1,000 queries (quick; not for reporting).")
flags.DEFINE_integer("num_images", 1000, "Test images to attack.", lower_bound=1)
flags.DEFINE_integer("batch_size", 128, "Images per attack call.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the image choice and the attacks.")
flags.DEFINE_string("output_dir", None, "Where results go.", required=True)
flags.DEFINE_bool("overwrite", False, "Replace results already in OUTPUT_DIR.")
flags.DEFINE_string("data_dir", None, "TFDS data directory.")
FLAGS = flags.FLAGS


def _load(path: str) -> tuple:
    """(model, training seconds) of a saved model, or an error naming the file."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"--model_path {path} does not exist.")
    try:
        model = keras.models.load_model(path)
    except Exception as error:  # Keras raises many kinds for a damaged file
        raise ValueError(f"--model_path {path} cannot be loaded ({type(error).__name__}: "
                         f"{error}); no model was attacked.") from error
    return model, training.training_seconds(os.path.dirname(path))


def main(argv):
    del argv
    with validation.exit_on_bad_value("evaluate.py"):
        epsilons = kg.evaluation.check_radii(
            FLAGS.epsilons or kg.data.DATASETS[FLAGS.dataset].radii[FLAGS.attack_norm],
            FLAGS.attack_norm)
        attacks = kg.evaluation.check_attack_names(
            "autoattack" if FLAGS.attacks == ["autoattack"] else FLAGS.attacks,
            FLAGS.attack_norm, FLAGS.protocol)
        existing = kg.evaluation.existing_results(FLAGS.output_dir, FLAGS.protocol)
        if existing and not FLAGS.overwrite:
            raise FileExistsError(f"{existing} already exist(s); pass --overwrite or another "
                                  "--output_dir.")
        models = {path: _load(path) for path in FLAGS.model_path}  # every one, before any attack
    x, y = training.test_images(FLAGS.dataset, FLAGS.num_images, data_dir=FLAGS.data_dir)
    common = dict(attack_norm=FLAGS.attack_norm, attacks=attacks, num_images=FLAGS.num_images,
                  batch_size=FLAGS.batch_size, seed=FLAGS.seed)
    name = lambda path: os.path.basename(os.path.dirname(os.path.abspath(path)))
    if FLAGS.protocol == "autoattack":
        reports = [report for path, (model, _) in models.items()
                   for report in kg.evaluate_autoattack(
                       model, x, y, epsilons=epsilons, name=name(path),
                       budget=kg.autoattack.BUDGETS[FLAGS.autoattack_budget], **common)]
        print(kg.evaluation.format_autoattack_table(reports))
        print("wrote", kg.evaluation.write_autoattack_results(reports, FLAGS.output_dir,
                                                              overwrite=FLAGS.overwrite))
        return
    reports = [kg.evaluate_robustness(model, x, y, epsilons=epsilons, name=name(path),
                                      training_time=seconds, **common)
               for path, (model, seconds) in models.items()]
    print(kg.format_table(reports))
    paths = kg.write_results(reports, FLAGS.output_dir, overwrite=FLAGS.overwrite)
    print("wrote", ", ".join(paths.values()))


if __name__ == "__main__":
    app.run(main)
