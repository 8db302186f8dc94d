"""MultiWorkerMirroredStrategy: two worker processes on loopback match one device."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run(output, tf_config=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), HERE,
                                                      os.environ.get("PYTHONPATH", "")]))
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen([sys.executable, os.path.join(HERE, "multi_worker_job.py"), output],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.processes
def test_two_workers_give_the_same_weights_as_one_device(tmp_path):
    workers = [f"localhost:{p}" for p in _free_ports(2)]
    jobs = [_run(str(tmp_path / "single.npz"))]
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        jobs.append(_run(str(tmp_path / f"worker{index}.npz"), config))
    for job in jobs:
        output, _ = job.communicate(timeout=300)
        assert job.returncode == 0, output[-3000:]
    single = np.load(tmp_path / "single.npz")
    for index in range(2):
        worker = np.load(tmp_path / f"worker{index}.npz")
        for key in single.files:
            np.testing.assert_allclose(worker[key], single[key], rtol=1e-9, atol=1e-12)
