"""Multi-host `fit` on the JAX backend: two processes on loopback (gloo), CPU.

Each test starts fresh Python processes with KERAS_BACKEND=jax (the test process itself
may run on TensorFlow); the trained weights are compared here.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_gradreg import training

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "examples", "train.py")
RUN = ["--dataset=offline_mnist", "--model=small_cnn", "--epochs=3", "--batch_size=64",
       "--train_limit=256", "--penalty_weight=1", "--penalty_every=2", "--seed=3",
       "--optimizer=sgd", "--learning_rate=0.05"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env():
    return dict(os.environ, KERAS_BACKEND="jax", JAX_ENABLE_X64="1", TF_CPP_MIN_LOG_LEVEL="2",
                PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))


def _start(args, log):
    return subprocess.Popen([sys.executable] + args, cwd=ROOT, env=_env(), stdout=log,
                            stderr=subprocess.STDOUT, text=True)


def _processes(script_args, extra, tmp_path, name, n=2):
    """Starts n processes of a script (the process id and port appended by `extra`)."""
    port = _free_port()
    logs = [open(tmp_path / f"{name}-{i}.log", "w") for i in range(n)]
    return [_start(script_args + extra(i, port), logs[i]) for i in range(n)]


def _wait(jobs, tmp_path, name, timeout=400):
    for i, job in enumerate(jobs):
        code = job.wait(timeout=timeout)
        log = (tmp_path / f"{name}-{i}.log").read_text().splitlines()
        log = [line for line in log if not line.startswith("Extension modules:")]  # a crash's
        assert code == 0, f"{name}-{i} exited with {code}:\n" + "\n".join(log)[-6000:]


def _train_flags(model_dir):
    return lambda i, port: RUN + [f"--model_dir={model_dir}", "--strategy=data_parallel",
                                  f"--coordinator_address=localhost:{port}",
                                  "--num_processes=2", f"--process_id={i}"]


@pytest.mark.processes
def test_two_processes_fit_to_the_weights_of_one_and_a_pre_sharded_feed_does_not(tmp_path):
    """Same global batches: equal weights to float64 rounding, for GradRegModel, for
    adversarial training (N-FGSM + ELLE-A: its random draws and adaptive weight are the
    global batch's; PGD-AT; TRADES) and for free training. Each process feeding its own half of every batch (the usual
    mistake) trains on other batches, and must differ."""
    job = os.path.join(ROOT, "tests", "distribution", "multi_host_job.py")
    runs = {n: _processes([job, str(tmp_path / str(n))], lambda i, port: [str(n), str(i), str(port)],
                          tmp_path, str(n), n) for n in (1, 2)}
    for n, jobs in runs.items():
        _wait(jobs, tmp_path, str(n))
    one, two, sharded = (np.load(tmp_path / name) for name in ("1.npz", "2.npz", "2-pre_sharded.npz"))
    for key in one.files:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-10, atol=1e-12)
    for suffix in ("single_step", "pgd_at", "trades", "free_at"):
        one_step, two_step = (np.load(tmp_path / f"{n}-{suffix}.npz") for n in (1, 2))
        for key in one_step.files:
            np.testing.assert_allclose(two_step[key], one_step[key], rtol=1e-10, atol=1e-12,
                                       err_msg=f"{suffix} {key}")
    # the N-FGSM model's file holds its radius and ELLE-A's 4 state variables too
    assert len(np.load(tmp_path / "1-single_step.npz").files) == len(one.files) + 5
    assert max(np.abs(sharded[k] - one[k]).max() for k in one.files if k != "loss") > 1e-3


def _weights(model_dir):
    return keras.models.load_model(os.path.join(model_dir, "model.keras")).get_weights()


@pytest.mark.processes
def test_two_killed_processes_resume_to_the_uninterrupted_weights(tmp_path):
    """kill -9 both processes after the first checkpoint, start both again: the run ends
    with the weights of an uninterrupted two-process run; only process 0 wrote files.

    (One process holding two CPU devices gives the same weights bit for bit, but XLA's
    in-process all-reduce aborted it once on a loaded 2-core machine: a 40 s rendezvous
    timeout. Two processes it stays.)"""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    reference = _processes([TRAIN], _train_flags(whole), tmp_path, "whole")
    jobs = _processes([TRAIN], _train_flags(killed), tmp_path, "first")
    state = killed / "backup" / "state.json"
    deadline = time.time() + 400
    while not state.exists() and time.time() < deadline and jobs[0].poll() is None:
        time.sleep(0.2)
    assert state.exists(), (tmp_path / "first-0.log").read_text()[-3000:]
    for job in jobs:
        os.kill(job.pid, signal.SIGKILL)
        job.wait()
    assert not (killed / "model.keras").exists()
    _wait(_processes([TRAIN], _train_flags(killed), tmp_path, "again"), tmp_path, "again")
    _wait(reference, tmp_path, "whole")
    for got, want in zip(_weights(killed), _weights(whole)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert sorted(os.listdir(killed)) == ["history.csv", "logs", "model.keras", "settings.json",
                                         "training_time.json"]


@pytest.mark.parametrize("settings,match", [
    (dict(num_processes=2, process_id=2, coordinator_address="localhost:1"),
     r"process_id=2.*0 \.\. num_processes - 1 = 1"),
    (dict(num_processes=2, process_id=1), "coordinator_address=None is not HOST:PORT"),
    (dict(num_processes=2, coordinator_address="localhost"), "'localhost' is not HOST:PORT"),
    (dict(num_processes=0), "num_processes=0"),
    (dict(num_processes=2, coordinator_address="h:1", strategy="default"),
     "num_processes=2 needs strategy='data_parallel'"),
    (dict(strategy="mirrored"), "strategy='mirrored' runs on the tensorflow backend"),
])
def test_bad_process_layouts_are_named_before_anything_starts(settings, match, tmp_path,
                                                              monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")  # all validate() reads
    config = training.TrainConfig(model_dir=str(tmp_path / "run"),
                                  **dict(dict(strategy="data_parallel"), **settings))
    with pytest.raises(ValueError, match=match):
        training.check_config(config)
    assert not (tmp_path / "run").exists()


def test_an_unreachable_coordinator_is_named_within_the_timeout(tmp_path, monkeypatch):
    """Process 1 checks the coordinator before JAX (which aborts the process) tries."""
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")  # all validate() reads
    port = _free_port()  # nothing listens there
    config = training.TrainConfig(model_dir=str(tmp_path / "run"), strategy="data_parallel",
                                  coordinator_address=f"localhost:{port}", num_processes=2,
                                  process_id=1, coordinator_timeout=1)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=f"process 1 of 2.*nothing answered at localhost:{port} within 1 s"):
        training.train(config)
    assert time.monotonic() - start < 10 and not (tmp_path / "run").exists()


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the TensorFlow pass")
def test_data_parallel_without_jax_is_refused(tmp_path):
    config = training.TrainConfig(model_dir=str(tmp_path / "run"), strategy="data_parallel")
    with pytest.raises(ValueError, match="'data_parallel' runs on the jax backend.*KERAS_BACKEND=jax"):
        training.train(config)
    assert not (tmp_path / "run").exists()
