"""The example scripts run end to end through absl flag parsing."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, *flags):
    return subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), *flags],
                          capture_output=True, text=True, timeout=600)


def test_quickstart_trains_and_prints_test_metrics():
    result = _run("quickstart.py", "--epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    line = [l for l in result.stdout.splitlines() if l.startswith("test:")][-1]
    metrics = dict(item.rsplit(" ", 1) for item in line[len("test: "):].split(", "))
    assert float(metrics["accuracy"]) > 0.5  # one epoch on 4,000 digits
    assert float(metrics["penalty"]) > 0 and float(metrics["grad_norm"]) > 0


def test_quickstart_rejects_a_bad_flag():
    result = _run("quickstart.py", "--norm=l3")
    assert result.returncode != 0
    assert "l3" in result.stderr and "l2" in result.stderr
