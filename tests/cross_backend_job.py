"""The same models, images and batch on one Keras backend: what tests/test_backends.py
compares across backends.

Usage: KERAS_BACKEND=... python cross_backend_job.py FOLDER

FOLDER holds `problem.npz` (images x, labels y, a training batch) and the two models
saved on TensorFlow (`gradreg.keras`, `adversarial.keras`). The job loads them, and writes
FOLDER/BACKEND.npz: their logits; each attack's verified examples at EPSILON; both
protocols' results; the bound metrics; the weights after one SGD step of each model on
the batch. It saves both models again as FOLDER/BACKEND-*.keras, for TensorFlow to load.
On JAX and PyTorch it fails if the loading, attacks, protocols, metrics or training
imported TensorFlow (Keras' saving imports it where it is installed).
"""

import sys

import keras
import numpy as np

import keras_gradreg as kg
from helpers import broken_by

EPSILON = 0.02
BUDGET = kg.AutoAttackBudget(apgd_steps=20, target_classes=3, fab_steps=20, square_queries=200)
"""Small budgets: the same algorithm on every backend, not its strength, is compared."""
ATTACKS = ("pgd", "apgd_ce", "apgd_dlr", "apgd_t", "fab_t", "square")
MODELS = ("gradreg", "adversarial")


def attack_results(model, x, y) -> dict:
    """Each attack's verified breaks and distances, and both protocols' results."""
    out = {}
    for name in ATTACKS:
        out[f"{name}_broken"], out[f"{name}_distance"] = broken_by(
            model, x, y, name, "linf", np.full(len(x), EPSILON), budget=BUDGET)
    results = kg.evaluate_autoattack(model, x, y, epsilons=EPSILON, attack_norm="linf",
                                     budget=BUDGET, verbose=0)
    out["autoattack_robust"] = np.array([results[0].robust_accuracy])
    report = kg.evaluate_robustness(model, x, y, attack_norm="linf", attacks=("pgd", "apgd_ce"),
                                    budget=kg.AttackBudget(steps=10, search_steps=8,
                                                                   autoattack=BUDGET), verbose=0)
    out["minimum_distance"] = report.distances
    out["lower_bound"] = report.lower_bounds
    return out


def main(folder: str) -> None:
    backend = keras.backend.backend()
    problem = np.load(f"{folder}/problem.npz")
    x, y = problem["x"], problem["y"]
    out, models = {}, {}
    for name in MODELS:
        model = kg.layers.load_model(f"{folder}/{name}.keras")
        out[f"{name}_logits"] = keras.ops.convert_to_numpy(model(x))
        metrics = [kg.LipschitzBound("linf"), kg.CurvatureBound()]
        model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(
            from_logits=True), metrics=metrics)
        if name == "gradreg":
            out.update(attack_results(model, x, y))
            logs = model.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
            for metric in metrics:
                out[f"metric_{metric.name}"] = np.array([logs[metric.name]])
        model.fit(problem["batch_x"], problem["batch_y"], batch_size=len(problem["batch_y"]),
                  epochs=1, shuffle=False, verbose=0)
        for index, weight in enumerate(model.get_weights()):
            out[f"{name}_step_{index}"] = weight
        models[name] = model
    if backend != "tensorflow":  # (Keras' own saving imports TensorFlow where it can)
        assert "tensorflow" not in sys.modules, f"the evaluation on {backend} imported TensorFlow"
    for name, model in models.items():
        model.save(f"{folder}/{backend}-{name}.keras")
    np.savez(f"{folder}/{backend}.npz", **out)


if __name__ == "__main__":
    main(sys.argv[1])
