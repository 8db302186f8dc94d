"""Times one training step of each variant on the same model, batch and optimizer.

    python examples/benchmark.py --output_json=bench.json

Variants (--variants, VARIANTS): plain (keras.Model), gradreg (the finite-difference
penalty, forward), gradreg_central, gradreg_lazy (the penalty on every --penalty_every-th
step only), double_backprop (the exact penalty), pgd_at (7-step PGD adversarial
training), trades (10-step TRADES), free_at (one batch: --replays updates), and
single-step adversarial training: fgsm_rs (FGSM from a random start), n_fgsm, and FGSM-RS
with each regulariser: fgsm_elle, fgsm_elle_a (adaptive), fgsm_gradient_penalty (the
finite-difference penalty at the clean point), fgsm_grad_align (double backprop). Each is
built by training.wrap, as a training run would build it.
Steps are timed in rounds that interleave the variants (warm-up excluded); the table
gives the median milliseconds per step, the spread (min-max over rounds) and the ratio
to plain. With --memory each variant also runs in a process of its own to measure its
peak resident memory above the same process idle (model built, no step). --fit_check
compares a fit epoch with steps x the step time, for plain Model.fit and GradRegModel.fit.

    python examples/benchmark.py --evaluation --output_json=eval.json

times the evaluations instead, on saved models (--model_path, repeatable; default the
three models of examples/reproduce.py) and --num_images test digits, those of
--evaluations: the minimum-distance protocol with the default attacks ("default"), with
CleverHans' FGM, PGD and MIM (the default before 0.3, "cleverhans") and with
attacks="autoattack" ("autoattack", Square included: slow), each attack, the sanity
checks and the lower bound apart, with the strength each reached; and AutoAttack's
standard cascade at --epsilon ("cascade", each attack apart).

    python examples/benchmark.py --evaluation --evaluations=backends \
        --model_path=runs/reproduce/pgd_at/model.keras --num_images=200

runs AutoAttack's standard cascade at the largest --epsilons on TensorFlow, JAX and
PyTorch and the official AutoAttack (the `pyautoattack` package, on a plain PyTorch module
with the same weights) on the same digits, one after the other, each in a process of its
own (autoattack_backends.py): seconds, robust error, speed against the official, images
only the official broke, and the model passes per image of each attack (PyTorch's and
the official's, counted).
"""

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags
from absl import logging
import keras
import numpy as np
import tensorflow as tf

import autoattack_backends
import keras_gradreg as kg
import shared_flags
from keras_gradreg import files
from keras_gradreg import validation

MODELS = {  # name: (zoo model, dataset of its input shape, batch size); softplus activations
    "small_cnn": ("small_cnn", "offline_mnist", 128),
    "resnet_bn": ("cifar_resnet", "cifar10", 64),  # 6 residual blocks with BatchNorm
    "resnext34_2x32": ("resnext34_2x32", "cifar10", 128),  # the paper's CIFAR-10 network
}
_ELLE = dict(method="fgsm_rs", regularizer_weight=1.0)
VARIANTS = {  # name: the TrainConfig fields of the variant
    "plain": dict(method="plain"),
    "gradreg": dict(method="gradreg"),
    "gradreg_central": dict(method="gradreg", difference="central"),
    "gradreg_lazy": dict(method="gradreg"),  # penalty_every: --penalty_every
    "double_backprop": dict(method="double_backprop"),
    "pgd_at": dict(method="pgd_at"),
    "trades": dict(method="trades"),
    "free_at": dict(method="free_at"),
    "fgsm_rs": dict(method="fgsm_rs"),
    "n_fgsm": dict(method="n_fgsm"),
    "fgsm_elle": dict(_ELLE, regularizer="local_linearity"),
    "fgsm_elle_a": dict(_ELLE, regularizer="adaptive_local_linearity"),
    "fgsm_gradient_penalty": dict(_ELLE, regularizer="gradient_penalty"),
    "fgsm_grad_align": dict(_ELLE, regularizer="grad_align"),
}
"""What the benchmark times: penalty_weight 1 and epsilon 0.1 throughout (the cost
depends on neither)."""
DEFAULT_VARIANTS = ("plain", "gradreg", "gradreg_central", "gradreg_lazy", "double_backprop",
                    "pgd_at", "trades", "fgsm_rs", "n_fgsm", "fgsm_elle", "fgsm_elle_a",
                    "fgsm_gradient_penalty", "fgsm_grad_align")
"""The variants timed by default: every one but free_at (a step of it is --replays updates)."""

flags.DEFINE_list("models", ["small_cnn", "resnet_bn"], f"Models, from {list(MODELS)}.")
flags.DEFINE_list("variants", list(DEFAULT_VARIANTS), f"Variants, from {list(VARIANTS)}.")
flags.DEFINE_list("methods", None, "The old name of --variants.")
flags.DEFINE_integer("rounds", 7, "Interleaved timing rounds.", lower_bound=1)
flags.DEFINE_integer("steps", 12, "Steps per variant per round (a multiple of --penalty_every).",
                     lower_bound=1)
shared_flags.define_training_flags(only=("batch_size", "jit_compile", "penalty_every"),
                                   unset=True)
shared_flags.define_evaluation_flags()
flags.DEFINE_bool("memory", False, "Also measure peak memory, one process per variant.")
flags.DEFINE_bool("fit_check", False, "Compare a GradRegModel.fit epoch with the step time.")
flags.DEFINE_string("output_json", None, "Write the results here (refuses to overwrite).")
flags.DEFINE_bool("evaluation", False, "Time the robustness evaluations instead of training steps.")
flags.DEFINE_multi_string("model_path", [f"runs/reproduce/{name}/model.keras" for name in
                                         ("undefended", "gradreg_l1", "pgd_at")],
                          "--evaluation: saved models to evaluate (default: the main job's).")
SUITES = {"default": None, "cleverhans": ("fgm", "pgd", "mim"), "autoattack": "autoattack"}
"""The minimum-distance evaluations --evaluations can time: their `attacks` argument.
"cleverhans" is the default before 0.3: CleverHans' FGM and MIM, and PGD (the library's
own since 0.7)."""
EVALUATIONS = (*SUITES, "cascade", "backends")
FORMAT_VERSION = 2
"""Of the --output_json files. 2: the evaluation's protocols under keys that say what they
hold (`protocol_key`); 1 (no "format_version"): "minimum_distance_SUITE" and, for the
cascade, "autoattack". `read_results` reads both."""
CASCADE_KEY = "autoattack_cascade"


def protocol_key(suite: str) -> str:
    """The results key of the minimum-distance protocol with a suite of attacks."""
    return f"minimum_distance/{suite}_attacks"


def read_results(path: str) -> dict:
    """An --output_json file in the current format, whichever version wrote it."""
    with open(path) as f:
        results = json.load(f)
    if results.get("format_version", 1) == 1:  # only the evaluation's keys changed
        old = {f"minimum_distance_{suite}": protocol_key(suite) for suite in SUITES}
        old["autoattack"] = CASCADE_KEY
        results = {path: {old.get(k, k): v for k, v in model.items()} if path != "environment"
                   else model for path, model in results.items()}
    return dict(results, format_version=FORMAT_VERSION)
flags.DEFINE_list("evaluations", list(EVALUATIONS), f"--evaluation: which to time, from "
                  f"{list(EVALUATIONS)} (cascade: AutoAttack at --epsilon; backends: AutoAttack "
                  "on each Keras backend and the official AutoAttack, processes of their own).")
flags.DEFINE_string("memory_child", None, "Internal: MODEL:METHOD to measure in this process.")
FLAGS = flags.FLAGS


LAZY_EVERY = 4
"""gradreg_lazy's k when --penalty_every is not given."""


def _jit_compile() -> bool:
    return kg.training.step_jit_compile(bool(FLAGS.jit_compile))


def _lazy_every() -> int:
    return FLAGS.penalty_every or LAZY_EVERY


def _cascade_epsilon() -> float:
    """--evaluation: AutoAttack's radius, the largest of --epsilons."""
    return max(shared_flags.evaluation_epsilons("offline_mnist", "linf"))


def build(model_name: str, variant: str) -> tuple:
    """A compiled model for a variant (built by training.wrap) and a fixed batch for it."""
    zoo, dataset, batch = MODELS[model_name]
    batch = FLAGS.batch_size or batch
    shape = kg.datasets.DATASETS[dataset].image_shape
    config = kg.training.check_config(kg.training.TrainConfig(
        model_dir="", dataset=dataset, model=zoo, activation="softplus", penalty_weight=1.0,
        epsilon=0.1, penalty_every=_lazy_every() if variant == "gradreg_lazy" else 1,
        **VARIANTS[variant]))
    keras.utils.set_random_seed(0)
    model = kg.training.wrap(config, kg.architectures.build_model(zoo, shape, 10, "softplus"))
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=_jit_compile())
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch,) + shape).astype("float32")
    y = rng.integers(0, 10, batch)
    return model, x, y


def time_steps(model, x, y, steps: int) -> float:
    """Seconds per step of `steps` consecutive train_on_batch calls."""
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return (time.perf_counter() - start) / steps


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(l for l in f if l.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def measure_memory(model_name: str, variant: str) -> float:
    """Peak RSS during training steps above the idle process (model built, no step), in MB.

    Linux only: the peak (VmHWM) is reset once the model is built, so what building and
    importing needed does not count.
    """
    model, x, y = build(model_name, variant)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    idle = _status_mb("VmRSS")
    for _ in range(3):
        model.train_on_batch(x, y)
    return _status_mb("VmHWM") - idle


def benchmark_model(model_name: str, variants, rounds: int, steps: int) -> dict:
    built = {m: build(model_name, m) for m in variants}
    for model, x, y in built.values():  # warm-up: trace and build optimiser state
        time_steps(model, x, y, _lazy_every())  # keeps gradreg_lazy's rounds in phase
    times = {m: [] for m in variants}
    for _ in range(rounds):
        for variant, (model, x, y) in built.items():
            times[variant].append(time_steps(model, x, y, steps))
    plain = np.median(times["plain"]) if "plain" in times else None
    results = {}
    for variant, values in times.items():
        ms = 1000 * np.median(values)
        results[variant] = {"ms": ms, "min_ms": 1000 * min(values), "max_ms": 1000 * max(values),
                           "ratio": float(np.median(values) / plain) if plain else None}
    return results


def fit_overhead(model_name: str, variant: str, batches: int = 20, repeats: int = 5) -> dict:
    """A fit epoch against `batches` x the step time of an identical model.

    Two instances, each timed on its own (switching one model between train_on_batch
    and fit retraces it), after a warm-up of 3 epochs. The ratio compares the fastest
    of `repeats` epochs with the fastest of `repeats` step rounds: on a 2-core virtual
    machine (docs/cost.md), single epochs of plain Model.fit and GradRegModel.fit alike sometimes
    took exactly twice as long with the process idle half the time, which a median of a
    few epochs does not filter out (median_ratio shows it).
    """
    fitted, x, y = build(model_name, variant)
    data = tf.data.Dataset.from_tensors((x, y)).repeat(batches)
    epochs = []
    for _ in range(3 + repeats):  # the first three are the warm-up
        start = time.perf_counter()
        fitted.fit(data, epochs=1, verbose=0)
        epochs.append(time.perf_counter() - start)
    epochs = epochs[3:]
    stepped, _, _ = build(model_name, variant)
    time_steps(stepped, x, y, 3 * batches)
    steps = [batches * time_steps(stepped, x, y, batches) for _ in range(repeats)]
    return {"epoch_s": min(epochs), "steps_x_step_s": min(steps), "ratio": min(epochs) / min(steps),
            "median_ratio": float(np.median(epochs) / np.median(steps))}


def evaluation_costs(path: str, x: np.ndarray, y: np.ndarray) -> dict:
    """Seconds and strength of each evaluation of one saved model (l_inf)."""
    model = kg.layers.load_model(path)
    result = {}
    for suite in (s for s in SUITES if s in FLAGS.evaluations):
        start = time.perf_counter()
        report = kg.evaluate_robustness(model, x, y, attack_norm="linf", attacks=SUITES[suite],
                                        epsilons=shared_flags.evaluation_epsilons(
                                            "offline_mnist", "linf"),
                                        num_images=len(x), verbose=0)
        result[protocol_key(suite)] = {
            "seconds": time.perf_counter() - start, "split": report.seconds,
            "mean_distance": report.mean_distance,
            "error_at": {f"{e:g}": report.error_at(e) for e in report.epsilons},
            "attack_error_at": {a: {f"{e:g}": float(np.mean(d <= e)) for e in report.epsilons}
                                for a, d in report.attack_distances.items()},
            "checks_passed": all(c.passed for c in report.checks)}
    if "cascade" not in FLAGS.evaluations:
        return result
    start = time.perf_counter()
    cascade, = kg.evaluate_autoattack(model, x, y, epsilons=_cascade_epsilon(), num_images=len(x),
                                      verbose=0)
    result[CASCADE_KEY] = {"seconds": time.perf_counter() - start, "split": cascade.seconds,
                            "robust_error": cascade.robust_error,
                            "robust_error_after": {a: 1 - v for a, v in cascade.robust_after.items()}}
    return result


def stage_rows(result: dict, num_images: int) -> list:
    """One model's evaluations as rows (protocol, stage, seconds, seconds per 1,000 images,
    share of the protocol's time); the stages of each protocol add up to its time."""
    rows = []
    for protocol, timing in result.items():
        total = timing["seconds"]
        stages = dict(timing["split"])
        stages["other"] = max(total - sum(stages.values()), 0.0)  # image checks, predictions
        rows += [(protocol, stage, seconds, 1000 * seconds / num_images, seconds / total)
                 for stage, seconds in stages.items()]
        rows.append((protocol, "total", total, 1000 * total / num_images, 1.0))
    return rows


def print_evaluation_costs(results: dict, num_images: int) -> None:
    for path, r in results.items():
        if not r:  # (--evaluations=backends alone: its own table)
            continue
        print(f"\n{path}")
        for suite in (s for s in SUITES if protocol_key(s) in r):
            m = r[protocol_key(suite)]
            errors = ", ".join(f"{k}: {100 * v:.1f} %" for k, v in m["error_at"].items())
            print(f"  minimum distance, {suite}: mean distance {m['mean_distance']:.4f}; error at "
                  f"{errors}; checks passed: {m['checks_passed']}")
        if CASCADE_KEY in r:
            a = r[CASCADE_KEY]
            after = ", ".join(f"{k} {100 * v:.1f} %" for k, v in a["robust_error_after"].items())
            print(f"  AutoAttack at {_cascade_epsilon():g}: robust error {100 * a['robust_error']:.1f} % "
                  f"(after each attack: {after})")
        rows = [[protocol, stage, f"{seconds:.1f}", f"{per_1000:.1f}", f"{100 * share:.1f}"]
                for protocol, stage, seconds, per_1000, share in stage_rows(r, num_images)]
        print(kg.evaluation.render_table(
            f"seconds per stage, {num_images} images",
            ["protocol", "stage", "seconds", "s per 1,000 images", "% of the protocol"], rows))


def environment() -> dict:
    """What the numbers were measured with: the Keras backend and the versions."""
    env = {"backend": keras.backend.backend(), "keras": keras.__version__,
           "tensorflow": tf.__version__, "jit_compile": _jit_compile(), "cpus": os.cpu_count()}
    if env["backend"] == "jax":
        import jax

        env["jax"] = jax.__version__
    return env


def _check_flags() -> None:
    """Raises naming the first bad flag, before any work."""
    for name in FLAGS.models:
        if name not in MODELS:
            raise ValueError(f"--models: {name!r} is not one of {list(MODELS)}.")
    if FLAGS.methods is not None:  # the old name
        if FLAGS["variants"].present:
            raise ValueError("--methods is the old name of --variants; give --variants only.")
        logging.warning("--methods is renamed --variants; it still works, for now.")
        FLAGS.variants = FLAGS.methods
    for variant in FLAGS.variants:
        if variant not in VARIANTS:
            raise ValueError(f"--variants: {variant!r} is not one of {list(VARIANTS)}.")
    if "gradreg_lazy" in FLAGS.variants and FLAGS.steps % _lazy_every():
        raise ValueError(f"--steps={FLAGS.steps} must be a multiple of --penalty_every="
                         f"{_lazy_every()}, so that every round has as many penalised steps.")
    if FLAGS.output_json and os.path.exists(FLAGS.output_json):
        raise FileExistsError(f"--output_json {FLAGS.output_json} exists; choose another path.")
    for name in FLAGS.evaluations:
        if name not in EVALUATIONS:
            raise ValueError(f"--evaluations: {name!r} is not one of {list(EVALUATIONS)}.")
    if FLAGS.evaluation:
        missing = [p for p in FLAGS.model_path if not os.path.exists(p)]
        if missing:
            raise FileNotFoundError(f"--model_path {missing} missing; run examples/reproduce.py "
                                    "first or name saved models.")
        shared_flags.evaluation_epsilons("offline_mnist", "linf")


def main(argv):
    del argv
    if FLAGS.memory_child:
        model_name, variant = FLAGS.memory_child.split(":")
        print(json.dumps({"peak_mb": measure_memory(model_name, variant)}))
        return
    with validation.exit_on_bad_value("benchmark.py"):
        _check_flags()
    if FLAGS.evaluation:
        x, y = kg.training.test_images("offline_mnist", FLAGS.num_images)
        results = {path: evaluation_costs(path, x, y) for path in FLAGS.model_path}
        env = dict(environment(), num_images=len(x))
        print(", ".join(f"{k} {v}" for k, v in env.items()))
        print_evaluation_costs(results, len(x))
        for path in FLAGS.model_path if "backends" in FLAGS.evaluations else ():
            print(f"\n{path}")
            runs = autoattack_backends.run(autoattack_backends.RUNS, path, len(x), _cascade_epsilon())
            autoattack_backends.print_table(runs, _cascade_epsilon())
            results[path]["autoattack_backends"] = runs
        if FLAGS.output_json:
            files.write_text(FLAGS.output_json, json.dumps(dict(results, environment=env, format_version=FORMAT_VERSION),
                                                     indent=1))
        return
    results = {}
    for name in FLAGS.models:
        results[name] = benchmark_model(name, FLAGS.variants, FLAGS.rounds, FLAGS.steps)
        if FLAGS.memory:
            for variant in FLAGS.variants:
                child = subprocess.run(
                    [sys.executable, __file__, f"--memory_child={name}:{variant}",
                     f"--penalty_every={_lazy_every()}", f"--jit_compile={bool(FLAGS.jit_compile)}"]
                    + ([f"--batch_size={FLAGS.batch_size}"] if FLAGS.batch_size else []),
                    capture_output=True, text=True, check=True)
                results[name][variant]["peak_mb"] = json.loads(child.stdout.splitlines()[-1])["peak_mb"]
        if FLAGS.fit_check:  # GradRegModel's fit overhead, beside plain Model.fit's
            results[name]["fit_overhead"] = {m: fit_overhead(name, m) for m in ("plain", "gradreg")}
    env = environment()
    print(", ".join(f"{k} {v}" for k, v in env.items()))
    for name, rows in results.items():
        _, shape, batch = MODELS[name]
        batch = FLAGS.batch_size or batch
        print(f"\n{name} {shape}, batch {batch}")
        print(f"{'variant':<16} {'ms/step':>9} {'min-max':>15} {'ratio':>6} {'peak MB':>8}")
        for variant in FLAGS.variants:
            r = rows[variant]
            peak = f"{r['peak_mb']:.0f}" if "peak_mb" in r else "-"
            ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
            print(f"{variant:<16} {r['ms']:>9.1f} {r['min_ms']:>7.1f}-{r['max_ms']:<7.1f} {ratio:>6} {peak:>8}")
        for variant, f in rows.get("fit_overhead", {}).items():
            print(f"{variant} fit epoch {f['epoch_s']:.3f} s vs 20 x step {f['steps_x_step_s']:.3f} s "
                  f"(fastest of 5): ratio {f['ratio']:.3f}; of medians {f['median_ratio']:.3f}")
    if FLAGS.output_json:
        files.write_text(FLAGS.output_json, json.dumps(dict(results, environment=env, format_version=FORMAT_VERSION),
                                                     indent=1))


if __name__ == "__main__":
    app.run(main)
