"""The example scripts run end to end through absl flag parsing, on tiny settings."""

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from helpers import evaluation_problem
import keras_gradreg as kg  # registers the classes saved models name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _command(script, *flags):
    # The checkout's package, not whichever copy pip installed last.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    return [sys.executable, os.path.join(ROOT, "examples", script), *flags], env


def _run(script, *flags, cwd=None):
    command, env = _command(script, *flags)
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


def _epochs_done(model_dir):
    try:
        return json.load(open(os.path.join(model_dir, "backup", "state.json")))["epochs"]
    except (OSError, ValueError):
        return 0


@pytest.mark.processes
def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_weights(tmp_path):
    """The killed run is a process of its own; the uninterrupted and the resumed runs
    are train.py's main() in this process."""
    flags = ["--epochs=4", "--train_limit=384", "--batch_size=64", "--method=gradreg"]
    whole = str(tmp_path / "whole")
    killed = str(tmp_path / "killed")
    command, env = _command("train.py", f"--model_dir={killed}", *flags)
    job = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while _epochs_done(killed) < 1 and job.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(job.pid, signal.SIGKILL)  # somewhere in epoch 2 or later: whatever it was writing
    job.wait()
    assert not os.path.exists(os.path.join(killed, "model.keras")), "finished before the kill"
    assert "trained in" in _main("train.py", f"--model_dir={whole}", *flags)
    assert "trained in" in _main("train.py", f"--model_dir={killed}", *flags)
    a = keras.models.load_model(os.path.join(whole, "model.keras"))
    b = keras.models.load_model(os.path.join(killed, "model.keras"))
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(v, u, rtol=1e-5, atol=1e-6)
    rows = list(csv.DictReader(open(os.path.join(killed, "history.csv"))))
    assert [int(r["epoch"]) for r in rows] == list(range(4))


def test_quickstart_trains_and_prints_test_metrics():
    line = [l for l in _main("quickstart.py", "--epochs=1").splitlines() if l.startswith("test:")][-1]
    metrics = dict(item.rsplit(" ", 1) for item in line[len("test: "):].split(", "))
    assert float(metrics["accuracy"]) > 0.5  # one epoch on 4,000 digits
    assert float(metrics["penalty"]) > 0 and float(metrics["grad_norm"]) > 0


def test_train_then_evaluate(tmp_path):
    model_dir = str(tmp_path / "gr")
    assert "trained in" in _main("train.py", f"--model_dir={model_dir}", "--epochs=1",
                                 "--train_limit=256", "--batch_size=64", "--method=gradreg",
                                 "--attack_norm=linf")
    assert os.path.exists(os.path.join(model_dir, "model.keras"))
    # a finished run there: refused with one line, in this process (see _refused)
    assert "(a finished run); pass overwrite=True (--overwrite)" in _refused(
        "train.py", f"--model_dir={model_dir}", "--epochs=1", "--train_limit=256",
        "--batch_size=64", "--method=gradreg", "--attack_norm=linf")
    assert "penalty_weight=1.0 there, 2.0 asked" in _refused(  # other settings there
        "train.py", f"--model_dir={model_dir}", "--epochs=1", "--train_limit=256",
        "--batch_size=64", "--method=gradreg", "--attack_norm=linf", "--penalty_weight=2")
    out = str(tmp_path / "eval")
    flags = [f"--model_path={model_dir}/model.keras", "--num_images=20", "--epsilons=0.1,0.3",
             "--attacks=fgm,pgd", f"--output_dir={out}"]
    assert "% error at 0.1" in _main("evaluate.py", *flags)
    rows = list(csv.DictReader(open(os.path.join(out, "results.csv"))))
    assert rows[0]["model"] == "gr" and float(rows[0]["training_time_s"]) > 0
    assert "--overwrite" in _refused("evaluate.py", *flags)
    cascade = _main("evaluate.py", f"--model_path={model_dir}/model.keras", "--num_images=6",
                    "--protocol=autoattack", "--epsilons=0.3", "--autoattack_budget=quick",
                    f"--output_dir={out}")  # results.json stays: another file
    assert "% robust error" in cascade
    written = json.load(open(os.path.join(out, "autoattack.json")))
    assert written[0]["epsilon"] == 0.3 and written[0]["num_images"] == 6
    assert set(written[0]["robust_after"]) == {"apgd_ce", "apgd_t", "fab_t", "square"}
    assert written[0]["budget"]["apgd_steps"] == 20  # quick
    # the refusals run in this process (_refused: one line, before any work)
    assert "attack='cw' is not supported" in _refused(
        "evaluate.py", f"--model_path={model_dir}/model.keras", "--protocol=autoattack",
        "--attacks=cw", f"--output_dir={tmp_path / 'bad'}")
    damaged = tmp_path / "damaged" / "model.keras"
    damaged.parent.mkdir()
    damaged.write_bytes(b"PK not a zip")
    late = str(tmp_path / "late")
    assert f"{damaged} cannot be loaded" in _refused(
        "evaluate.py", f"--model_path={model_dir}/model.keras", f"--model_path={damaged}",
        "--num_images=20", f"--output_dir={late}")  # every model is loaded before any attack
    assert not os.path.exists(late)


def test_train_takes_the_unsquared_penalty_and_any_keras_activation(tmp_path):
    """--penalty_power=1 with its radius and clean weight, --activation=gelu: the model
    and the run's settings hold them; bad values are refused in one line, no files."""
    model_dir = str(tmp_path / "run")
    flags = [f"--model_dir={model_dir}", "--epochs=1", "--train_limit=128", "--batch_size=64",
             "--method=gradreg", "--penalty_power=1", "--epsilon=0.1", "--clean_weight=0.8",
             "--h=0.05", "--activation=gelu"]
    assert "trained in" in _main("train.py", *flags)
    model = keras.models.load_model(os.path.join(model_dir, "model.keras"))
    assert (model.penalty_power, model.epsilon, model.clean_weight, model.h) == (1, 0.1, 0.8, 0.05)
    assert {l.get_config().get("activation") for l in model.layers} >= {"gelu"}
    stored = json.load(open(os.path.join(model_dir, "settings.json")))
    assert (stored["penalty_power"], stored["epsilon"], stored["activation"]) == (1, 0.1, "gelu")
    for bad, match in (("--penalty_power=3", "penalty_power=3"),
                       ("--clean_weight=1.5", "clean_weight=1.5"),
                       ("--activation=gelu2", "activation='gelu2'")):
        assert match in _refused("train.py", f"--model_dir={tmp_path}/bad", bad)
    assert not os.path.exists(tmp_path / "bad")


def test_the_datasets_radii_and_flag_radii_are_checked():
    assert kg.datasets.DATASETS["cifar10"].epsilons["linf"] == (2 / 255, 8 / 255)
    assert kg.datasets.DATASETS["offline_mnist"].epsilons["linf"] == (0.1, 0.2, 0.3)
    assert kg.attacks.ball.check_epsilons(["0.1", "0.3"], "linf") == (0.1, 0.3)  # as flags give them
    for bad in (["0.1", "nan"], ["abc"], ["1.5"]):
        try:
            kg.attacks.ball.check_epsilons(bad, "linf")
        except ValueError as error:
            assert "epsilon=" in str(error)
        else:
            raise AssertionError(f"{bad} accepted")


def test_refused_flags_leave_no_files(tmp_path):
    """reproduce.py checks all three runs' settings before it trains the first."""
    message = _refused("reproduce.py", f"--output_dir={tmp_path}/rep", "--epsilon=nan",
                       "--epochs=1")
    assert message.startswith("reproduce.py: error: epsilon=nan")
    assert not os.path.exists(tmp_path / "rep")  # not even the first two models


def test_reproduce_on_tiny_settings(tmp_path):
    tiny = (f"--output_dir={tmp_path}", "--epochs=1", "--train_limit=256", "--num_images=20",
            "--ramp_epochs=1", "--autoattack_images=6", "--epsilons=0.1,0.3",
            "--autoattack_budget=quick")
    printed = _main("reproduce.py", *tiny, "--penalty_every=2")
    assert "undefended" in printed and "pgd_at" in printed
    assert "radius ramped linearly" in printed and "penalised every 2 step(s)" in printed
    assert "AutoAttack (apgd_ce, apgd_t, fab_t, square), linf, 6 images, budget" in printed
    assert "% minimum-distance error, same images" in printed
    results = json.load(open(tmp_path / "results" / "results.json"))
    assert [r["name"] for r in results] == ["undefended", "gradreg_l1", "pgd_at"]
    assert all(r["num_images"] == 20 and r["training_time_s"] > 0 for r in results)
    cascade = json.load(open(tmp_path / "results" / "autoattack.json"))
    assert [(r["name"], r["epsilon"]) for r in cascade] == [
        (name, epsilon) for name in ("undefended", "gradreg_l1", "pgd_at") for epsilon in (0.1, 0.3)]
    # the same images as the table's first 6; a larger radius breaks at least as many
    for name, table in zip(("undefended", "gradreg_l1", "pgd_at"), results):
        small, large = [r for r in cascade if r["name"] == name]
        assert small["images"]["index"] == list(range(6))
        assert small["robust_error"] <= large["robust_error"]
        assert small["clean_accuracy"] == pytest.approx(
            1 - np.mean(np.array(table["images"]["distance"][:6]) == 0))
    # Asked for other settings, it reuses nothing trained differently.
    shutil.rmtree(tmp_path / "results")
    assert "penalty_every=2 there, 3 asked" in _refused("reproduce.py", *tiny, "--penalty_every=3")


def test_bad_flags_name_the_value_and_the_choices(tmp_path):
    """absl's own message for a bad choice (through app.run), then each script's one-line
    refusal; in this process (the SIGKILL test starts train.py as a process)."""
    from absl import app

    module = _script("train.py")
    shown = io.StringIO()
    try:
        with contextlib.redirect_stderr(shown), pytest.raises(SystemExit) as exit_:
            app.run(module.main, argv=["train.py", f"--model_dir={tmp_path}", "--method=madry"])
    finally:
        module.FLAGS.unparse_flags()
    assert exit_.value.code == 1 and "madry" in shown.getvalue() and "trades" in shown.getvalue()
    assert not os.listdir(tmp_path)
    message = _refused("train.py", f"--model_dir={tmp_path}/run", "--method=fgsm_rs",
                       "--epsilon=2")
    assert message.startswith("train.py: error: epsilon=2.0 must be")
    assert "attack_norm='l2'" in message
    assert not os.path.exists(tmp_path / "run")
    from absl import flags

    _script("quickstart.py")
    with pytest.raises(flags.IllegalFlagValueError, match="l3.*l2"):
        flags.FLAGS(["quickstart.py", "--attack_norm=l3"])
    flags.FLAGS.unparse_flags()


@pytest.mark.processes
def test_benchmark_writes_its_json_schema(tmp_path):
    out = tmp_path / "bench.json"
    assert "batch 32" in _main("benchmark.py", "--models=small_cnn", "--variants=plain,gradreg_lazy",
                               "--rounds=1", "--steps=2", "--penalty_every=2", "--batch_size=32",
                               "--memory", f"--output_json={out}")
    written = json.load(open(out))
    assert written["environment"]["backend"] == "tensorflow"
    rows = written["small_cnn"]
    assert set(rows) == {"plain", "gradreg_lazy"}
    assert rows["plain"]["ratio"] == 1.0
    assert all(r["ms"] > 0 and r["peak_mb"] > 0 for r in rows.values())  # the steps' own memory


_LOADED = {"name": None, "module": None, "flags": ()}
"""The example script imported in this process, and the absl flags it defined."""


def _script(name):
    """examples/NAME imported in this process, for flag-only checks without a Python
    start-up (several seconds each). The scripts share flag names (--epochs, ...), so the
    flags of the script imported before are removed first."""
    import importlib.util

    from absl import flags

    if _LOADED["name"] == name:
        return _LOADED["module"]
    for flag in _LOADED["flags"]:
        delattr(flags.FLAGS, flag)
    before = set(flags.FLAGS)
    spec = importlib.util.spec_from_file_location(f"{name[:-3]}_script",
                                                  os.path.join(ROOT, "examples", name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _LOADED.update(name=name, module=module, flags=tuple(set(flags.FLAGS) - before))
    return module


def _main(name, *argv):
    """What examples/NAME prints when run with flags `argv`, run in this process (its
    main(), as absl's app.run calls it, without a Python start-up)."""
    module = _script(name)
    module.FLAGS.unparse_flags()
    printed = io.StringIO()
    try:
        module.FLAGS([name, *argv])
        with contextlib.redirect_stdout(printed):
            module.main([name])
    finally:
        module.FLAGS.unparse_flags()
    return printed.getvalue()


def _refused(name, *argv):
    """The one line a script exits with for flags `argv`, run in this process; fails if
    it does not exit before any work."""
    module = _script(name)
    module.FLAGS.unparse_flags()
    try:
        module.FLAGS([name, *argv])
        with pytest.raises(SystemExit) as exit_:
            module.main([])
    finally:
        module.FLAGS.unparse_flags()
    message = str(exit_.value.code)
    assert "\n" not in message and message.startswith(f"{name}: error: "), message
    return message


def _benchmark_module():
    return _script("benchmark.py")


@pytest.mark.parametrize("argv,match", [
    (["--variants=sgd"], "--variants: 'sgd' is not one of"),
    (["--methods=plain", "--variants=plain"], "--methods is the old name of --variants"),
    (["--steps=3", "--penalty_every=2"], "--steps=3 must be a multiple of --penalty_every=2"),
    (["--evaluation", "--evaluations=default,square"], "--evaluations: 'square' is not one of.*cascade"),
    (["--output_json=EXISTING"], "--output_json .* exists"),
])
def test_benchmark_refuses_bad_flags_in_one_line_before_any_work(argv, match, tmp_path):
    """In-process (no Python start-up): the script's own flag check and its one-line exit."""
    existing = tmp_path / "bench.json"
    existing.write_text("{}")
    module = _benchmark_module()
    module.FLAGS.unparse_flags()
    module.FLAGS(["benchmark.py"] + [a.replace("EXISTING", str(existing)) for a in argv])
    try:
        with pytest.raises(SystemExit, match=f"^benchmark.py: error: {match}"):
            module.main([])
    finally:
        module.FLAGS.unparse_flags()
    assert existing.read_text() == "{}"


def test_benchmark_evaluation_stages_add_up_to_each_protocol_and_scale_to_1000_images():
    md, aa = "minimum_distance/default_attacks", "autoattack_cascade"
    result = {md: {"seconds": 10.0, "split": {"apgd_ce": 4.0, "sanity_checks": 2.0},
                   "mean_distance": 0.1},
              aa: {"seconds": 5.0, "split": {"apgd_ce": 1.0, "square": 4.0}}}
    rows = _benchmark_module().stage_rows(result, num_images=250)
    assert rows == [(md, "apgd_ce", 4.0, 16.0, 0.4), (md, "sanity_checks", 2.0, 8.0, 0.2),
                    (md, "other", 4.0, 16.0, 0.4), (md, "total", 10.0, 40.0, 1.0),
                    (aa, "apgd_ce", 1.0, 4.0, 0.2), (aa, "square", 4.0, 16.0, 0.8),
                    (aa, "other", 0.0, 0.0, 0.0), (aa, "total", 5.0, 20.0, 1.0)]


def test_benchmark_files_of_the_first_format_read_under_the_new_keys(tmp_path):
    module = _benchmark_module()
    timing = {"seconds": 1.0, "split": {}}
    old = {"m.keras": {"minimum_distance_default": timing, "minimum_distance_autoattack": timing,
                       "autoattack": timing},
           "environment": {"backend": "tensorflow", "num_images": 200}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    read = module.read_results(str(tmp_path / "old.json"))
    assert set(read["m.keras"]) == {"minimum_distance/default_attacks",
                                    "minimum_distance/autoattack_attacks", "autoattack_cascade"}
    assert read["environment"] == old["environment"] and read["format_version"] == 2
    new = dict(read)
    (tmp_path / "new.json").write_text(json.dumps(new))
    assert module.read_results(str(tmp_path / "new.json")) == new


def test_frontier_refuses_bad_grid_flags_before_any_training(tmp_path):
    for flags, shown in [(["--penalty_weights=10,ten"], "--penalty_weights: 'ten' is not a number"),
                         (["--pgd_steps=0"], "pgd_steps=0"),
                         (["--regime=collapse", "--epsilons=0.2,0.4"],
                          "epsilon=0.3 must be one of epsilons=[0.2, 0.4]"),
                         (["--regime=l2", "--epsilons=1,2,40"], "epsilon=40.0 must be")]:
        assert shown in _refused("frontier.py", f"--output_dir={tmp_path}/f", *flags)
    assert not os.path.exists(tmp_path / "f")


def test_frontier_redraws_a_saved_frontier_without_training(tmp_path):
    saved = os.path.join(ROOT, "docs", "data", "frontier_collapse.json")
    out = tmp_path / "again"
    printed = _main("frontier.py", "--regime=collapse", f"--redraw={saved}", f"--output_dir={out}")
    assert "pgd_at 3 steps" in printed and f"wrote {out / 'frontier.png'}" in printed
    assert sorted(os.listdir(out)) == ["frontier.png"]  # no run, no evaluation
    before = (out / "frontier.png").read_bytes()
    shown = _refused("frontier.py", "--regime=collapse", f"--redraw={saved}", f"--output_dir={out}")
    assert "frontier.png" in shown and (out / "frontier.png").read_bytes() == before
    assert "does not exist" in _refused("frontier.py", f"--redraw={tmp_path}/none.json")


def test_the_paper_experiments_hold_the_papers_settings():
    """examples/experiments.py against Finlay & Oberman (2019): its recipe and Table 1."""
    import experiments
    from keras_gradreg.attacks import pgd

    cifar = experiments.PAPER_CIFAR10
    assert {k: cifar.settings[k] for k in ("dataset", "model", "optimizer", "learning_rate",
                                           "l2", "batch_size", "epochs", "schedule", "cutout",
                                           "h", "attack_norm")} == dict(
        dataset="cifar10", model="resnext34_2x32", optimizer="sgd", learning_rate=0.1, l2=5e-4,
        batch_size=128, epochs=200, schedule="paper", cutout=True, h=0.01, attack_norm="linf")
    assert kg.training.PAPER_SCHEDULE == ((0.3, 0.2), (0.6, 0.04), (0.8, 0.008))  # 60/120/160 of 200
    runs = dict(cifar.runs)
    assert [runs[n]["penalty_weight"] for n in ("gradreg_l1_0.1", "gradreg_l1_1")] == [0.1, 1.0]
    assert runs["pgd_at"] == dict(method="pgd_at", attack_steps=7)
    assert cifar.settings["epsilon"] == 8 / 255 and runs["fgsm_rs"]["method"] == "fgsm_rs"
    step = cifar.settings["epsilon"] * pgd.step_for_reach(7, pgd.TRAINING_REACH)
    assert step == pytest.approx(2 / 255)  # the paper's baseline: steps of about 2/255
    assert cifar.epsilons == (2 / 255, 8 / 255) and cifar.num_images == 1000
    assert cifar.top_k == 1 and cifar.table_norm is None
    assert [row[:4] for row in cifar.published] == [
        ("undefended", 4.36, (70.82, 98.94), 6.62e-3), ("gradreg_l1_0.1", 6.45, (24.92, 70.41), 2.35e-2),
        ("gradreg_l1_1", 9.02, (18.47, 58.69), 3.34e-2), ("pgd_at", 16.33, (22.86, 46.02), 4.07e-2)]
    assert [row[4] for row in cifar.published] == [2.06, 5.22, 5.15, 12.10]

    imagenet = experiments.PAPER_IMAGENET
    scale = experiments.IMAGENET_PIXEL_STD
    assert scale == pytest.approx(np.mean([0.229, 0.224, 0.225]), abs=1e-3)
    assert {k: imagenet.settings[k] for k in ("dataset", "model", "optimizer", "l2",
                                              "decay_biases", "attack_norm", "epochs")} == dict(
        dataset="imagenet2012", model="resnet50", optimizer="sgd", l2=1e-4, decay_biases=False,
        attack_norm="l2", epochs=29)  # the authors' train.py: no weight decay on biases
    assert imagenet.settings["h"] / scale == pytest.approx(0.01)  # in normalised units
    lambdas = [dict(imagenet.runs)[n]["penalty_weight"] / scale**2
               for n in ("gradreg_l2_0.1", "gradreg_l2_1")]
    assert lambdas == pytest.approx([0.1, 1.0])
    assert (imagenet.top_k, imagenet.table_norm, imagenet.epsilons) == (5, "linf", (2 / 255, 8 / 255))
    assert [row[:2] for row in imagenet.published] == [
        ("undefended", 6.94), ("gradreg_l2_0.1", 7.66), ("gradreg_l2_1", 10.26)]
    assert [row[2] for row in imagenet.published] == [(90.21, 98.94), (70.56, 97.53), (52.79, 95.93)]


def _small_evaluation_budgets(monkeypatch):
    """The scripts' evaluate_robustness on small budgets (3 radii of 4 PGD steps, the
    masking check's Square 20 queries): for an end-to-end test whose every pass is
    ResNet-50's at 224x224; the protocol at its budgets is tested in tests/evaluation."""
    import functools

    small = kg.AttackBudget(steps=4, search_steps=3, autoattack=kg.AutoAttackBudget(
        apgd_steps=4, fab_steps=4, square_queries=20))
    monkeypatch.setattr(kg, "evaluate_robustness",
                        functools.partial(kg.evaluate_robustness, budget=small))


@pytest.mark.processes
def test_the_paper_cifar10_experiment_runs_end_to_end_on_mock_data(tmp_path):
    """The experiment trained a few steps on TFDS' mock data with the paper's optimizer,
    schedule and augmentation, as the penalty and as PGD-AT, attacked by the paper's
    protocol and printed beside the published table, on the paper's ResNeXt34-2x32; a flag
    given wins over the experiment's setting. (No AutoAttack: on an image the two steps
    leave correctly classified, its quick cascade on the ResNeXt took 4-5 minutes of the
    suite, FAB-T's nine targets most of them; test_reproduce_on_tiny_settings runs it.)"""
    import tensorflow_datasets as tfds

    tiny = (f"--output_dir={tmp_path}", "--experiment=paper_cifar10", "--epochs=1",
            "--train_limit=8", "--batch_size=4", "--num_images=1", "--autoattack_images=0",
            "--attacks=pgd")
    assert "--runs='gradreg' is not supported" in _refused("reproduce.py", *tiny, "--runs=gradreg")
    assert "'nosuch'" in _refused("reproduce.py", *tiny, "--attacks=nosuch")
    names = ["gradreg_l1_0.1", "pgd_at"]
    with tfds.testing.mock_data(num_examples=16):
        printed = _main("reproduce.py", *tiny, f"--runs={','.join(names)}")
    assert "published (Finlay & Oberman 2019" in printed and "70.82" in printed
    assert "SGD (momentum 0.9) lr 0.1, paper schedule, L2 weight decay 0.0005, cutout" in printed
    assert f"7-step PGD at l_inf {8 / 255:g}, no radius ramp" in printed
    results = json.load(open(tmp_path / "results" / "results.json"))
    assert [r["name"] for r in results] == names
    assert list(results[0]["error_at"]) == [f"{2 / 255:g}", f"{8 / 255:g}"]
    assert "linf attacks (pgd), best attack per image, 1 images" in printed  # --attacks wins
    assert sorted(os.listdir(tmp_path)) == sorted(names + ["results"])
    for name in names:
        settings = json.load(open(tmp_path / name / kg.training.SETTINGS_FILE))
        assert (settings["model"], settings["l2"], settings["epochs"]) == ("resnext34_2x32", 5e-4, 1)
        assert (settings["schedule"], settings["cutout"]) == ("paper", True)
        assert keras.models.load_model(tmp_path / name / "model.keras").optimizer.l2 == 5e-4


@pytest.mark.processes
def test_the_paper_imagenet_experiment_runs_end_to_end_on_mock_data(tmp_path, monkeypatch):
    """ResNet-50 with the converted squared l2 penalty, the authors' schedule, top-5
    error in l_inf: a few steps on TFDS' mock ImageNet, one image attacked by PGD (the
    protocol's top-k attacks, APGD-CE and PGD, are tested in tests/evaluation). Each of
    the protocol's passes is a ResNet-50 pass at 224x224: here on small budgets (with the
    default ones, 12 radii of 20 PGD steps and the masking check's 1,000 Square queries,
    the evaluation of one image took 2 of this test's 2.7 minutes)."""
    import tensorflow_datasets as tfds

    _small_evaluation_budgets(monkeypatch)

    tiny = (f"--output_dir={tmp_path}", "--experiment=paper_imagenet", "--epochs=1",
            "--train_limit=2", "--batch_size=2", "--num_images=1", "--autoattack_images=0",
            "--runs=gradreg_l2_0.1", "--attacks=pgd")
    with tfds.testing.mock_data(num_examples=4):
        printed = _main("reproduce.py", *tiny)
    assert "linf attacks (pgd), best attack per image, 1 images, top-5 error" in printed
    assert "published (Finlay & Oberman 2019" in printed and "top-5 error" in printed
    results = json.load(open(tmp_path / "results" / "results.json"))
    assert [(r["name"], r["top_k"], r["attack_norm"]) for r in results] == [
        ("gradreg_l2_0.1", 5, "linf")]
    settings = json.load(open(tmp_path / "gradreg_l2_0.1" / kg.training.SETTINGS_FILE))
    assert (settings["attack_norm"], settings["schedule"], settings["l2"]) == ("l2", "paper_imagenet", 1e-4)
    assert settings["penalty_weight"] == pytest.approx(0.1 * 0.226**2)


def test_the_backends_benchmark_counts_passes_per_attack_and_compares_with_the_official(capsys):
    """examples/autoattack_backends.py (benchmark.py --evaluations=backends): model calls
    counted per image under the stage the cascade logs; the tables' seconds, robust error,
    speed against the official run, images only the official broke and passes per attack,
    on made-up results."""
    import logging

    import autoattack_backends

    model, x, y, _, _ = evaluation_problem()
    passes = autoattack_backends.Passes()
    logger = logging.getLogger("keras_gradreg.evaluation.cascade")
    logger.addHandler(passes)
    level, seen = logger.level, []
    passes.emit = lambda record, emit=passes.emit: (seen.append(record.args[0]), emit(record))
    logger.setLevel(logging.INFO)
    try:
        kg.evaluate_autoattack(model, x, y, epsilons=0.2, attacks=("apgd_ce", "square"),
                               budget="quick", verbose=1)
    finally:
        logger.removeHandler(passes)
        logger.setLevel(level)
    assert seen == ["apgd_ce", "square"][:len(seen)] and seen  # the stages, as logged
    counted = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    counted.call = passes.wrap(counted.call)
    counted(np.zeros((5, 3), "float32"))
    passes.stage = "fab_t"
    counted.predict(np.zeros((2, 3), "float32"), verbose=0)
    assert passes.counts == {seen[-1]: {"forward": 5, "gradient": 0},
                             "fab_t": {"forward": 2, "gradient": 0}}
    results = [{"run": "tensorflow", "seconds": 2.0, "robust": [True, True, False, False],
                "seconds_per_attack": {"apgd_ce": 0.5, "square": 1.5}},
               {"run": "official", "seconds": 5.0, "robust": [True, False, False, True],
                "seconds_per_attack": {"apgd_ce": 1.0, "apgd_t": 1.0, "fab_t": 1.0, "square": 2.0},
                "passes_per_image": {"apgd_ce": {"forward": 2.0, "gradient": 100.0},
                                     "square": {"forward": 8.0, "gradient": 0.0}}}]
    capsys.readouterr()  # (the cascade's progress bars)
    autoattack_backends.print_table(results, 0.3)
    times, passes_table = capsys.readouterr().out.split("Model passes per image")
    rows = {line.split()[0]: line.split() for line in times.splitlines()[3:]}
    assert rows["tensorflow"][1:] == ["2.0", "0.5", "/", "0.0", "/", "0.0", "/", "1.5", "50.0",
                                      "2.50", "1"]
    assert rows["official"][1:] == ["5.0", "1.0", "/", "1.0", "/", "1.0", "/", "2.0", "50.0",
                                    "1.00", "0"]
    rows = {line.split()[0]: line.split() for line in passes_table.splitlines()[3:]}
    assert list(rows) == ["official"]  # counted runs only
    assert rows["official"][1:] == ["2", "/", "100", "8", "/", "0", "10", "/", "100"]


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_the_official_autoattack_attacks_a_plain_torch_module_with_the_same_logits(padding):
    """autoattack_backends.torch_module: the Keras CNN's weights in a plain torch module
    (NCHW), the same logits; a layer it cannot convert is named."""
    torch = pytest.importorskip("torch", reason="the torch extra: pip install '.[torch]'")
    import autoattack_backends

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((9, 8, 2)),
        keras.layers.Conv2D(4, 3, strides=2, padding=padding, activation="relu"),
        keras.layers.Conv2D(3, (2, 3), padding=padding),
        keras.layers.Flatten(), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3)])
    x = np.random.default_rng(0).uniform(size=(4, 9, 8, 2)).astype("float32")
    module = autoattack_backends.torch_module(model, x.shape[1:])
    logits = module(torch.from_numpy(x).permute(0, 3, 1, 2)).detach().numpy()
    np.testing.assert_allclose(logits, keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-5)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="tanh")])
    with pytest.raises(ValueError, match=r"has 'dense.*' \(Dense, tanh\)"):
        autoattack_backends.torch_module(model, (3,))
